package main

import (
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
