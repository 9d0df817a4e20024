package consensus

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// loopbackTLS is a Raft TLS configuration for loopback hosts: one
// self-signed certificate (127.0.0.1) that every host presents and trusts.
func loopbackTLS(t *testing.T) *RaftTLS {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "raft"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	return &RaftTLS{
		Server: func() (*tls.Config, error) {
			return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}, nil
		},
		Client: func() (*tls.Config, error) {
			return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool}, nil
		},
	}
}

// TestVolumeShardsOnTheirOwnHost: with a slower volume tick, the volume
// shards run on a second NodeHost sharing the Raft address and TLS
// listener, while the metadata shard stays on the first; proposals,
// membership changes and restarts work on both, and a host restarted
// finds each shard where it ran.
func TestVolumeShardsOnTheirOwnHost(t *testing.T) {
	rt := loopbackTLS(t)
	hosts := newClusterWith(t, 3, 0, func(c *HostConfig) { c.TLS, c.VolumeRTTMillisecond = rt, 50 })
	ctx := ctxT(t, 60*time.Second)
	const shard = 2001
	for _, th := range hosts {
		if th.h.vnh == nil {
			t.Fatalf("%s runs no volume shards' host", th.name)
		}
	}
	vols, rec := witnessVolume(t, ctx, hosts, shard)
	for _, th := range hosts {
		if th.h.nhOf(shard) != th.h.vnh || th.h.nhOf(MetaShardID) != th.h.nh {
			t.Fatalf("%s: the volume shard is not on the volume host, or the metadata shard is", th.name)
		}
		if th.h.nh.HasNodeInfo(shard, 1) || th.h.nh.HasNodeInfo(shard, 2) || th.h.nh.HasNodeInfo(shard, 3) {
			t.Fatalf("%s: the metadata host has data of the volume shard", th.name)
		}
	}
	// Both hosts answer through the one listener.
	if err := hosts[1].meta.SetConfig(ctx, map[string]string{"k": "v"}); err != nil {
		t.Fatalf("metadata proposal: %v", err)
	}
	if _, err := vols[1].Outdate(ctx, shard, rec.Epoch, "n1", "test"); err == nil {
		t.Fatal("a secondary fenced the primary")
	}
	// n2 restarts: its replica comes back on the volume host.
	hosts[1].close()
	hosts[1].open(t, 0)
	vols[1] = NewVolumes(hosts[1].h, "n2")
	if !hosts[1].h.HasShardData(shard, 2) {
		t.Fatal("after a restart the host does not find the volume shard's data")
	}
	if err := vols[1].Start(ShardSpec{ShardID: shard, ReplicaID: 2}); err != nil {
		t.Fatal(err)
	}
	if hosts[1].h.nhOf(shard) != hosts[1].h.vnh {
		t.Fatal("the restarted replica runs on the metadata host")
	}
	got, err := vols[1].Record(ctx, shard)
	if err != nil || got.Primary != "n1" || got.Replicas["n2"].State != UpToDate {
		t.Fatalf("record read on the restarted replica: %+v %v", got, err)
	}
	if _, err := vols[0].Outdate(ctx, shard, got.Epoch, "n2", "test"); err != nil {
		t.Fatalf("outdate after n2's restart: %v", err)
	}
}

// TestVolumeShardStaysOnTheHostThatRanIt: a sparse shard started before
// the volume shards had a host of their own (an upgraded node) keeps
// running on the metadata host, with its data.
func TestVolumeShardStaysOnTheHostThatRanIt(t *testing.T) {
	rt := loopbackTLS(t)
	th := &testHost{name: "n1", dir: t.TempDir(), addr: freeAddr(t), with: func(c *HostConfig) { c.TLS = rt }}
	th.open(t, 0)
	t.Cleanup(th.close)
	ctx := ctxT(t, 60*time.Second)
	const shard = 3001
	start := func() *Volumes {
		t.Helper()
		v := NewVolumes(th.h, "n1")
		if err := v.Start(ShardSpec{ShardID: shard, ReplicaID: 1, Members: map[uint64]string{1: th.addr}}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	v := start()
	if th.h.vnh != nil {
		t.Fatal("a volume shards' host without a slower tick")
	}
	if _, err := v.Init(ctx, VolumeRecord{Name: "v", ShardID: shard, Size: 1 << 20, Primary: "n1", Replicas: map[string]*ReplicaRecord{"n1": {State: UpToDate}}}); err != nil {
		t.Fatal(err)
	}
	th.close()
	th.with = func(c *HostConfig) { c.TLS, c.VolumeRTTMillisecond = rt, 50 }
	th.open(t, 0)
	v = start()
	if th.h.vnh == nil || th.h.nhOf(shard) != th.h.nh {
		t.Fatal("the shard moved off the host that holds its data")
	}
	if got, err := v.Record(ctx, shard); err != nil || got.Name != "v" {
		t.Fatalf("record after the upgrade: %+v %v", got, err)
	}
	// A shard new since runs on the volume host, and stays there when the
	// setting goes back to one host (its data is there).
	const newer = 3002
	if err := v.Start(ShardSpec{ShardID: newer, ReplicaID: 1, Members: map[uint64]string{1: th.addr}}); err != nil {
		t.Fatal(err)
	}
	if th.h.nhOf(newer) != th.h.vnh {
		t.Fatal("a new shard is not on the volume host")
	}
	if _, err := v.Init(ctx, VolumeRecord{Name: "w", ShardID: newer, Size: 1 << 20, Primary: "n1", Replicas: map[string]*ReplicaRecord{"n1": {State: UpToDate}}}); err != nil {
		t.Fatal(err)
	}
	th.close()
	th.with = func(c *HostConfig) { c.TLS = rt }
	th.open(t, 0)
	v = start()
	if err := v.Start(ShardSpec{ShardID: newer, ReplicaID: 1}); err != nil {
		t.Fatal(err)
	}
	if th.h.vnh == nil || th.h.nhOf(newer) != th.h.vnh || th.h.nhOf(shard) != th.h.nh {
		t.Fatal("with one host asked for, a shard left the host that holds its data")
	}
	if got, err := v.Record(ctx, newer); err != nil || got.Name != "w" {
		t.Fatalf("record of the volume host's shard after going back to one host: %+v %v", got, err)
	}
}
