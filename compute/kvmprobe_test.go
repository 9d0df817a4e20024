package compute

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhci/tandem/internal/guest"
)

// TestProbeKVM boots the test guest's kernel: under TCG the probe must
// say usable (the probe itself works); a file that is no kernel, or a
// timeout too short for any boot, must say not usable, with the reason.
// KVM's own verdict on this host is logged, not asserted: it is what the
// probe is for.
func TestProbeKVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a kernel")
	}
	img := testGuestImage(t)
	ctx := context.Background()
	r := ProbeKVM(ctx, KVMProbe{Kernel: img.Kernel, Accel: "tcg", Timeout: 2 * time.Minute})
	if !r.Usable || !strings.Contains(r.Detail, "ran to its end") {
		t.Fatalf("TCG probe: %+v", r)
	}
	t.Logf("TCG probe: %s", r.Detail)

	bad := filepath.Join(t.TempDir(), "vmlinuz-bad")
	if err := os.WriteFile(bad, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := ProbeKVM(ctx, KVMProbe{Kernel: bad, Accel: "tcg", Timeout: time.Minute}); r.Usable || !strings.Contains(r.Detail, "failed") {
		t.Errorf("probe of a file that is no kernel: %+v", r)
	}
	if r := ProbeKVM(ctx, KVMProbe{Kernel: img.Kernel, Accel: "tcg", Timeout: 50 * time.Millisecond}); r.Usable || !strings.Contains(r.Detail, "hung") {
		t.Errorf("probe with no time to boot: %+v", r)
	}
	if r := ProbeKVM(ctx, KVMProbe{Kernel: filepath.Join(t.TempDir(), "none"), Accel: "tcg"}); r.Usable {
		t.Errorf("probe of a missing kernel: %+v", r)
	}
	if _, err := newestKernel(t.TempDir()); err == nil {
		t.Errorf("newestKernel of an empty directory succeeded")
	}

	kvm := ProbeKVM(ctx, KVMProbe{Kernel: img.Kernel, Timeout: 10 * time.Second})
	t.Logf("KVM on this host: usable=%v: %s", kvm.Usable, kvm.Detail)
}

// testGuestImage builds (or reuses) the test guest's kernel.
func testGuestImage(t *testing.T) guest.Image {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	img, err := guest.EnsureImage(context.Background(), root)
	if err != nil {
		t.Skipf("no test guest image: %v", err)
	}
	return img
}
