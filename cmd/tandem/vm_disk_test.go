package main

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDiskFlag(t *testing.T) {
	for _, tc := range []struct {
		in                     string
		size                   int64
		replicas               uint32
		backend, storage, pool string
	}{
		{in: "64M", size: 64 << 20},
		{in: "1G,replicas=3", size: 1 << 30, replicas: 3},
		{in: "64M,backend=rbd", size: 64 << 20, backend: "rbd"},
		{in: "64M,backend=rbd,storage=ceph1,pool=vms", size: 64 << 20, backend: "rbd", storage: "ceph1", pool: "vms"},
		{in: "64M,backend=replicated,replicas=2", size: 64 << 20, replicas: 2, backend: "replicated"},
	} {
		d, err := parseDiskFlag(tc.in)
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if d.SizeBytes != tc.size || d.Replicas != tc.replicas || d.Backend != tc.backend || d.Storage != tc.storage || d.Pool != tc.pool {
			t.Fatalf("%s: got %+v", tc.in, d)
		}
	}
	for in, want := range map[string]string{
		"64M,backend=rbd,replicas=2": "replicas does not apply to an RBD disk",
		"64M,pool=vms":               "apply to RBD disks only",
		"64M,backend=nfs":            "backend must be replicated (the default) or rbd",
		"64M,replicas=4":             "replicas must be 1, 2 or 3",
		"64M,color=red":              `unknown option "color"`,
	} {
		if _, err := parseDiskFlag(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want an error with %q, got %v", in, want, err)
		}
	}
}

func TestParseDiskAdd(t *testing.T) {
	d, err := parseDiskAdd("64M,replicas=3", "")
	if err != nil || d.SizeBytes != 64<<20 || d.Replicas != 3 || d.Volume != "" {
		t.Fatalf("--disk 64M,replicas=3: %+v %v", d, err)
	}
	d, err = parseDiskAdd("1G,backend=rbd,storage=ceph1", "")
	if err != nil || d.SizeBytes != 1<<30 || d.Backend != "rbd" || d.Storage != "ceph1" {
		t.Fatalf("--disk 1G,backend=rbd: %+v %v", d, err)
	}
	d, err = parseDiskAdd("", "data")
	if err != nil || d.Volume != "data" || d.SizeBytes != 0 {
		t.Fatalf("--disk-volume data: %+v %v", d, err)
	}
	for _, tc := range []struct{ disk, volume, want string }{
		{"", "", "give a new disk"},
		{"64M", "data", "give one disk, new or existing"},
		{"64M,replicas=4", "", "replicas must be 1, 2 or 3"},
		{"1000", "", "multiple of 4 KiB"},
		{"", "Bad/Name", "--disk-volume"},
	} {
		_, err := parseDiskAdd(tc.disk, tc.volume)
		var ue *usageError
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &ue) {
			t.Errorf("--disk %q --disk-volume %q: want a usage error with %q, got %v", tc.disk, tc.volume, tc.want, err)
		}
	}
}
