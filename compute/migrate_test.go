package compute

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"
)

func TestNodeMemoryAndRunning(t *testing.T) {
	d := dialTest(t, startLibvirtd(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	total, free, err := d.NodeMemory(ctx)
	if err != nil {
		t.Fatalf("NodeMemory: %v", err)
	}
	// The test driver reports a fixed fake host (its free memory is off by
	// a factor of 1024, so only the shape is checked).
	if total == 0 || free == 0 || free > total {
		t.Fatalf("NodeMemory = %d MiB total, %d MiB free", total, free)
	}
	t.Logf("test driver host: %d MiB total, %d MiB free", total, free)

	const name = "vm-run"
	if err := d.Define(ctx, testSpec(name)); err != nil {
		t.Fatal(err)
	}
	running, err := d.Running(ctx)
	if err != nil {
		t.Fatalf("Running: %v", err)
	}
	// "test" is the driver's built-in running domain.
	if !slices.Contains(running, "test") || slices.Contains(running, name) {
		t.Fatalf("Running = %v, want test and not the shut-off %s", running, name)
	}
	if err := d.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	if running, err = d.Running(ctx); err != nil || !slices.Contains(running, name) {
		t.Fatalf("Running after Start = %v, %v", running, err)
	}
	// Paused counts as running: the domain still occupies the host.
	dom, err := d.lv.DomainLookupByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.lv.DomainSuspend(dom); err != nil {
		t.Fatal(err)
	}
	if running, err = d.Running(ctx); err != nil || !slices.Contains(running, name) {
		t.Fatalf("Running with %s paused = %v, %v", name, running, err)
	}

	cancelled, cancel2 := context.WithCancel(ctx)
	cancel2()
	if _, err := d.Running(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("Running with a cancelled context: %v", err)
	}
	if _, _, err := d.NodeMemory(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("NodeMemory with a cancelled context: %v", err)
	}
}

// The test driver cannot migrate, so only the error paths are unit
// tested; testcluster's TestLibvirtdMigrate migrates real QEMU guests.
func TestMigrateErrors(t *testing.T) {
	d := dialTest(t, startLibvirtd(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := d.Migrate(ctx, "no-such-vm", "test:///default", MigrateOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Migrate of a missing domain: %v, want ErrNotFound", err)
	}
	if _, err := d.Migrate(ctx, "test", "", MigrateOptions{}); err == nil || !strings.Contains(err.Error(), "destination") {
		t.Errorf("Migrate without a destination: %v", err)
	}
	bad := testSpec("test")
	bad.VCPUs = 0
	if _, err := d.Migrate(ctx, "test", "qemu+tcp://192.0.2.1/system", MigrateOptions{DestSpec: &bad}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("Migrate with an invalid DestSpec: %v, want ErrInvalidSpec", err)
	}
	// The test driver has no migration support: the error is libvirt's,
	// wrapped with the domain's name, and the domain stays put.
	_, err := d.Migrate(ctx, "test", "qemu+tcp://192.0.2.1/system", MigrateOptions{})
	var le libvirt.Error
	if err == nil || !errors.As(err, &le) || !strings.Contains(err.Error(), `"test"`) {
		t.Fatalf("Migrate on the test driver: %v, want a wrapped libvirt error", err)
	}
	t.Logf("test driver: %v", err)
	wantState(t, d, "test", StateRunning)
}

func TestJobParams(t *testing.T) {
	got := jobParams([]libvirt.TypedParam{
		{Field: libvirt.DomainJobDowntime, Value: *libvirt.NewTypedParamValueUllong(25)},
		{Field: libvirt.DomainJobTimeElapsed, Value: *libvirt.NewTypedParamValueLlong(1500)},
		{Field: "negative", Value: *libvirt.NewTypedParamValueLlong(-1)},
		{Field: "small", Value: *libvirt.NewTypedParamValueUint(7)},
		{Field: libvirt.DomainJobOperationStr, Value: *libvirt.NewTypedParamValueString("x")},
	})
	want := map[string]uint64{libvirt.DomainJobDowntime: 25, libvirt.DomainJobTimeElapsed: 1500, "small": 7}
	if len(got) != len(want) {
		t.Fatalf("jobParams = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("jobParams[%s] = %d, want %d", k, got[k], v)
		}
	}
}

func TestWithPKIPath(t *testing.T) {
	for _, c := range []struct{ uri, dir, want string }{
		{"qemu+tls://10.0.0.2/system", "/var/lib/tandem/libvirt-pki", "qemu+tls://10.0.0.2/system?pkipath=/var/lib/tandem/libvirt-pki"},
		{"qemu+tls://[fd00::2]/system?no_verify=0", "/d", "qemu+tls://[fd00::2]/system?no_verify=0&pkipath=/d"},
		{"qemu+tls://h/system?pkipath=/mine", "/d", "qemu+tls://h/system?pkipath=/mine"},
		{"qemu+tls://h/system", "/a b&c", "qemu+tls://h/system?pkipath=%2Fa+b%26c"},
		{"qemu+tcp://h/system", "/d", "qemu+tcp://h/system"},
		{"qemu+ssh://root@h/system", "/d", "qemu+ssh://root@h/system"},
		{"qemu+tls://h/system", "", "qemu+tls://h/system"},
	} {
		if got := WithPKIPath(c.uri, c.dir); got != c.want {
			t.Errorf("WithPKIPath(%q, %q) = %q, want %q", c.uri, c.dir, got, c.want)
		}
	}
	if !IsTLSURI("qemu+tls://h/system") || IsTLSURI("qemu+tcp://h/system") || IsTLSURI("::") {
		t.Error("IsTLSURI")
	}
}
