package consensus

import "testing"

func TestEffectiveHAState(t *testing.T) {
	cases := []struct{ desired, ha, want string }{
		{VMStarted, "", HAStarted},
		{VMStopped, "", VMStopped},
		{VMDisabled, HAStarted, VMDisabled},
		{VMStarted, HARecovery, HARecovery},
		{VMStopped, HAError, HAError},
		{VMStarted, HAFence, HAFence},
	}
	for _, c := range cases {
		v := &VMRecord{Desired: c.desired, HAState: c.ha}
		if got := v.EffectiveHAState(); got != c.want {
			t.Errorf("desired %s, HA %q: %q, want %q", c.desired, c.ha, got, c.want)
		}
	}
}
