package nbd

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"
)

// Real clients over STARTTLS: QEMU (tls-creds-x509) and libnbd (nbds://
// with tls-certificates), as in the acceptance of issue 13, which wants
// them to work against Tandem as they do against qemu-nbd --tls-creds.

// qemuTLSArgs opens export over TLS with the client files in dir.
func qemuTLSArgs(h *harness, dir, export string) []string {
	host, port, _ := net.SplitHostPort(h.tlsAddr)
	return []string{
		"--object", "tls-creds-x509,id=tls0,dir=" + dir + ",endpoint=client",
		"--image-opts", "driver=nbd,host=" + host + ",port=" + port + ",export=" + export + ",tls-creds=tls0",
	}
}

func nbdsURI(h *harness, dir, export string) string {
	return "nbds://" + h.tlsAddr + "/" + export + "?tls-certificates=" + dir
}

// clientDirs writes the client directories the external-client tests
// use: consumer A's and consumer B's certificates from the cluster CA, a
// self-signed certificate for export a, and one for export a from another
// CA.
func clientDirs(t *testing.T, f *tlsFixture) (dirA, dirB, dirSelf, dirOther string) {
	t.Helper()
	other := newTestCA(t, "another cluster")
	return writeClientDir(t, f.ca, f.certA),
		writeClientDir(t, f.ca, f.certB),
		writeClientDir(t, f.ca, selfSigned(t, "consumer-a", "a")),
		writeClientDir(t, f.ca, other.issue(t, "consumer-a", false, "a"), other)
}

func TestQemuTLS(t *testing.T) {
	f := newTLSFixture(t)
	dirA, dirB, dirSelf, dirOther := clientDirs(t, f)

	out := run(t, 30*time.Second, "qemu-img", append([]string{"info", "--output=json"}, qemuTLSArgs(f.harness, dirA, "a")...)...)
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.VirtualSize != 4<<20 {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}

	// A write through one qemu-io, read back by another.
	run(t, 60*time.Second, "qemu-io", append(qemuTLSArgs(f.harness, dirA, "a"), "-c", "write -P 0x5a 64k 128k", "-c", "flush")...)
	out = run(t, 60*time.Second, "qemu-io", append(qemuTLSArgs(f.harness, dirA, "a"), "-c", "read -P 0x5a 64k 128k", "-c", "read -P 0 0 64k")...)
	if strings.Contains(out, "Pattern verification failed") || strings.Count(out, "read ") != 2 {
		t.Fatalf("qemu-io read back:\n%s", out)
	}
	if d, _, _, _, _, _, _ := f.volA.snapshot(); !bytes.Equal(d[64<<10:192<<10], bytes.Repeat([]byte{0x5a}, 128<<10)) {
		t.Fatal("the volume does not hold what qemu-io wrote")
	}

	for _, tc := range []struct {
		name, dir, export, why string
	}{
		{"certificate of another export", dirB, "a", "unknown export"},
		{"self-signed certificate", dirSelf, "a", ""},
		{"certificate of another CA", dirOther, "a", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := command(t, 30*time.Second, "qemu-io", append(qemuTLSArgs(f.harness, tc.dir, tc.export), "-c", "write -P 0x66 0 4k")...)
			if err == nil || !strings.Contains(out, tc.why) {
				t.Fatalf("qemu-io was not refused (%v):\n%s", err, out)
			}
			t.Logf("refused: %s", strings.TrimSpace(out))
		})
	}
	t.Run("no TLS", func(t *testing.T) {
		out, err := command(t, 30*time.Second, "qemu-io", "-f", "raw", "-c", "write -P 0x66 0 4k", "nbd://"+f.tlsAddr+"/a")
		if err == nil {
			t.Fatalf("qemu-io without TLS was not refused:\n%s", out)
		}
		t.Logf("refused: %s", strings.TrimSpace(out))
	})
	if d, _, _, _, _, _, _ := f.volA.snapshot(); d[0] != 0 {
		t.Fatal("a refused client wrote to the volume")
	}
	waitFor(t, "refusals counted", func() bool { return f.srv.Stats().TLSHandshakeErrors > 0 })
	if s := f.srv.Stats(); s.Unauthorized == 0 || s.TLSRequired == 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestNBDInfoTLS(t *testing.T) {
	f := newTLSFixture(t)
	dirA, dirB, dirSelf, dirOther := clientDirs(t, f)

	out := run(t, 30*time.Second, "nbdinfo", "--json", nbdsURI(f.harness, dirA, "a"))
	var info struct {
		Protocol string           `json:"protocol"`
		TLS      bool             `json:"TLS"`
		Exports  []map[string]any `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 || !info.TLS {
		t.Fatalf("nbdinfo output: %v\n%s", err, out)
	}
	if info.Exports[0]["export-name"] != "a" || info.Exports[0]["export-size"] != float64(4<<20) {
		t.Fatalf("nbdinfo: %s", out)
	}

	// Listing shows a consumer only its own exports.
	out = run(t, 30*time.Second, "nbdinfo", "--list", "--json", nbdsURI(f.harness, dirB, ""))
	var list struct {
		Exports []map[string]any `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Exports) != 1 || list.Exports[0]["export-name"] != "b" {
		t.Fatalf("nbdinfo --list with a certificate for b: %v\n%s", err, out)
	}

	for _, tc := range []struct{ name, uri string }{
		{"certificate of another export", nbdsURI(f.harness, dirB, "a")},
		{"self-signed certificate", nbdsURI(f.harness, dirSelf, "a")},
		{"certificate of another CA", nbdsURI(f.harness, dirOther, "a")},
		{"no TLS", "nbd://" + f.tlsAddr + "/a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := command(t, 30*time.Second, "nbdinfo", tc.uri)
			if err == nil || strings.Contains(out, "export-size") {
				t.Fatalf("nbdinfo was not refused (%v):\n%s", err, out)
			}
			t.Logf("refused: %s", strings.TrimSpace(out))
		})
	}
	waitFor(t, "refusals counted", func() bool { return f.srv.Stats().TLSHandshakeErrors >= 2 })
	if s := f.srv.Stats(); s.Unauthorized == 0 || s.TLSRequired == 0 {
		t.Fatalf("stats %+v", s)
	}
	if d, _, _, _, _, _, _ := f.volA.snapshot(); d[0] != 0 {
		t.Fatal("a refused client wrote to the volume")
	}
}
