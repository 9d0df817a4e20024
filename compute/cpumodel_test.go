package compute

import (
	"slices"
	"strings"
	"testing"
)

// An excerpt of 'virsh domcapabilities --virttype qemu' (libvirt 9.0).
const domCapsXML = `<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path>
  <domain>qemu</domain>
  <machine>pc-q35-7.2</machine>
  <arch>x86_64</arch>
  <cpu>
    <mode name='host-passthrough' supported='no'/>
    <mode name='host-model' supported='yes'>
      <model fallback='forbid'>qemu64</model>
    </mode>
    <mode name='custom' supported='yes'>
      <model usable='yes' vendor='unknown'>qemu64</model>
      <model usable='yes' vendor='unknown'>qemu32</model>
      <model usable='yes' vendor='Intel'>Nehalem</model>
      <model usable='no' vendor='Intel'>Skylake-Server</model>
      <model usable='yes' vendor='AMD'>Opteron_G1</model>
    </mode>
  </cpu>
</domainCapabilities>`

func TestCPUModels(t *testing.T) {
	known, usable, err := cpuModelsOf(domCapsXML)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"qemu64", "qemu32", "Nehalem", "Skylake-Server", "Opteron_G1"}; !slices.Equal(known, want) {
		t.Errorf("known %v, want %v", known, want)
	}
	if want := []string{"qemu64", "qemu32", "Nehalem", "Opteron_G1"}; !slices.Equal(usable, want) {
		t.Errorf("usable %v, want %v", usable, want)
	}
	for _, ok := range []string{"qemu64", "Nehalem", ""} {
		if p := CPUModelProblem(ok, known, usable); p != "" {
			t.Errorf("%q: %s", ok, p)
		}
	}
	p := CPUModelProblem("nosuch", known, usable)
	if !strings.Contains(p, "nosuch") || !strings.Contains(p, "does not know") || !strings.Contains(p, "qemu64, Nehalem, qemu32") {
		t.Errorf("unknown model: %q", p)
	}
	if p := CPUModelProblem("Skylake-Server", known, usable); !strings.Contains(p, "cannot provide it here") {
		t.Errorf("unusable model: %q", p)
	}
	// Of many, a few are named, the well-known ones first.
	many := append([]string{"486", "Conroe", "Penryn"}, wellKnownCPUModels()...)
	p = CPUModelProblem("nosuch", many, many)
	if !strings.Contains(p, "it knows 13, e.g. qemu64, kvm64, Nehalem, Westmere, SandyBridge, Haswell;") {
		t.Errorf("many models: %q", p)
	}
	// Without capabilities (libvirt's test driver) nothing is judged.
	if p := CPUModelProblem("nosuch", nil, nil); p != "" {
		t.Errorf("no capabilities: %q", p)
	}
	if _, _, err := cpuModelsOf("<domainCapabilities"); err == nil {
		t.Error("bad XML: no error")
	}
}
