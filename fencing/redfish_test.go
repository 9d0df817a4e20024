package fencing

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	rfUser = "fence"
	rfPass = "Redfish-Sekrit-9z" // distinctive, so a leak is easy to grep for
	// rfReset is deliberately not the usual .../Actions/ComputerSystem.Reset:
	// the agent must use the target the system advertises.
	rfReset = "/redfish/v1/Systems/node-7/Actions/Custom.Reset"
)

// fakeBMC is a protocol-level Redfish service with the minimal resources a
// fencing agent uses (DMTF DSP0266 / ComputerSystem schema names):
// ServiceRoot, the Systems collection, ComputerSystem resources with
// PowerState and Actions/#ComputerSystem.Reset, and the reset action
// itself. Power changes take a few reads ("PoweringOff" first), like a real
// BMC's asynchronous reset.
type fakeBMC struct {
	srv *httptest.Server

	mu         sync.Mutex
	power      map[string]string // system Id -> PowerState
	pending    map[string]string // system Id -> state reached after transition reads
	transition int               // reads of the transitional state before pending applies
	left       map[string]int
	resets     []string // "<id> <ResetType>" of accepted POSTs
	authFails  int
	neverOff   bool // ForceOff is accepted but the system stays "PoweringOff"
	badJSON    bool // ComputerSystem GETs return malformed JSON
	// badJSONAfterReset sets badJSON once a reset was accepted.
	badJSONAfterReset bool
	postStatus        int  // non-zero: reset POSTs fail with this status
	getStatus         int  // non-zero: ComputerSystem GETs fail with this status
	offRefuses        bool // ForceOff on an Off system is refused (409), as many BMCs do
}

func newFakeBMC(t *testing.T, systems ...string) *fakeBMC {
	t.Helper()
	if len(systems) == 0 {
		systems = []string{"node-7"}
	}
	f := &fakeBMC{power: map[string]string{}, pending: map[string]string{}, left: map[string]int{}, transition: 2, offRefuses: true}
	for _, id := range systems {
		f.power[id] = "On"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /redfish/v1/{$}", func(w http.ResponseWriter, r *http.Request) {
		// The service root needs no authentication (DSP0266 §13.3).
		writeJSON(w, map[string]any{
			"@odata.id":      "/redfish/v1/",
			"@odata.type":    "#ServiceRoot.v1_5_0.ServiceRoot",
			"Id":             "RootService",
			"RedfishVersion": "1.6.0",
			"Systems":        map[string]string{"@odata.id": "/redfish/v1/Systems"},
		})
	})
	mux.HandleFunc("GET /redfish/v1/Systems", f.auth(func(w http.ResponseWriter, r *http.Request) {
		var members []map[string]string
		for _, id := range systems {
			members = append(members, map[string]string{"@odata.id": "/redfish/v1/Systems/" + id})
		}
		writeJSON(w, map[string]any{
			"@odata.id":           "/redfish/v1/Systems",
			"@odata.type":         "#ComputerSystemCollection.ComputerSystemCollection",
			"Members":             members,
			"Members@odata.count": len(members),
		})
	}))
	mux.HandleFunc("GET /redfish/v1/Systems/{id}", f.auth(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		f.mu.Lock()
		defer f.mu.Unlock()
		st, ok := f.power[id]
		switch {
		case !ok:
			redfishErr(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no such system")
			return
		case f.getStatus != 0:
			redfishErr(w, f.getStatus, "Base.1.8.InternalError", "the BMC is rebooting")
			return
		case f.badJSON:
			fmt.Fprint(w, `{"Id": "`+id+`", "PowerState": "Of`)
			return
		}
		if next, ok := f.pending[id]; ok {
			if f.left[id] > 0 {
				f.left[id]--
			} else if !(f.neverOff && next == "Off") {
				f.power[id], st = next, next
				delete(f.pending, id)
			}
		}
		target := "/redfish/v1/Systems/" + id + "/Actions/ComputerSystem.Reset"
		if id == "node-7" {
			target = rfReset
		}
		writeJSON(w, map[string]any{
			"@odata.id":   "/redfish/v1/Systems/" + id,
			"@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem",
			"Id":          id,
			"PowerState":  st,
			"Actions": map[string]any{
				"#ComputerSystem.Reset": map[string]any{
					"target":                            target,
					"ResetType@Redfish.AllowableValues": []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart"},
				},
			},
		})
	}))
	reset := f.auth(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if r.URL.Path == rfReset {
			id = "node-7"
		}
		var body struct{ ResetType string }
		if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&body) != nil {
			redfishErr(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "malformed request body")
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		st, ok := f.power[id]
		switch {
		case !ok:
			redfishErr(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no such system")
			return
		case f.postStatus != 0:
			redfishErr(w, f.postStatus, "Base.1.8.InternalError", "the BMC encountered an internal error")
			return
		}
		var next, via string
		switch body.ResetType {
		case "ForceOff":
			if st == "Off" && f.offRefuses {
				redfishErr(w, http.StatusConflict, "Base.1.8.ActionNotSupported", "the system is already powered off")
				return
			}
			next, via = "Off", "PoweringOff"
		case "On":
			next, via = "On", "PoweringOn"
		default:
			redfishErr(w, http.StatusBadRequest, "Base.1.8.ActionParameterNotSupported", "unsupported ResetType")
			return
		}
		f.resets = append(f.resets, id+" "+body.ResetType)
		f.badJSON = f.badJSON || f.badJSONAfterReset
		f.power[id], f.pending[id], f.left[id] = via, next, f.transition
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST "+rfReset, reset)
	mux.HandleFunc("POST /redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset", reset)
	f.srv = httptest.NewUnstartedServer(mux)
	// The untrusted-certificate test makes the server log handshake errors.
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeBMC) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != rfUser || p != rfPass {
			f.mu.Lock()
			f.authFails++
			f.mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Basic realm="Redfish"`)
			redfishErr(w, http.StatusUnauthorized, "Base.1.8.InsufficientPrivilege", "There are insufficient privileges for the account or credentials associated with the current session to perform the requested operation.")
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func redfishErr(w http.ResponseWriter, code int, id, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code":    id,
		"message": msg,
		"@Message.ExtendedInfo": []map[string]string{{
			"MessageId": id, "Message": msg, "Severity": "Critical",
		}},
	}})
}

func (f *fakeBMC) set(fn func(f *fakeBMC)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeBMC) snapshot() (resets []string, authFails int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.resets...), f.authFails
}

func (f *fakeBMC) config(password string) RedfishConfig {
	pool := x509.NewCertPool()
	pool.AddCert(f.srv.Certificate())
	return RedfishConfig{
		Endpoint:     f.srv.URL,
		User:         rfUser,
		Password:     password,
		RootCAs:      pool,
		Timeout:      5 * time.Second,
		PollInterval: 10 * time.Millisecond,
	}
}

func noSecret(t *testing.T, what string, s string) {
	t.Helper()
	if strings.Contains(s, rfPass) || strings.Contains(s, "wrong-"+rfPass) {
		t.Fatalf("%s leaks the password: %s", what, s)
	}
}

func TestRedfishFenceStatusUnfence(t *testing.T) {
	f := newFakeBMC(t)
	agent := NewRedfish(f.config(rfPass))
	mustStatus(t, agent, PowerOn)

	res, err := agent.Fence(testCtx(t, 10*time.Second))
	if err != nil || !res.Confirmed || !res.PowerOff {
		t.Fatalf("Fence = %+v, %v; want confirmed power off", res, err)
	}
	if res.Agent != agent.Name() || res.At.IsZero() || !strings.HasPrefix(res.Agent, "redfish:127.0.0.1:") {
		t.Fatalf("Fence result = %+v: agent name or time wrong", res)
	}
	if resets, _ := f.snapshot(); len(resets) != 1 || resets[0] != "node-7 ForceOff" {
		t.Fatalf("resets = %q, want one ForceOff on the advertised target", resets)
	}
	mustStatus(t, agent, PowerOff)

	// Already off (and the BMC refuses a second ForceOff): still confirmed,
	// from a fresh PowerState read.
	res, err = agent.Fence(testCtx(t, 10*time.Second))
	if err != nil || !res.Confirmed || res.Detail != "power already off" {
		t.Fatalf("Fence of an off system = %+v, %v", res, err)
	}

	if err := agent.Unfence(testCtx(t, 10*time.Second)); err != nil {
		t.Fatalf("Unfence: %v", err)
	}
	mustStatus(t, agent, PowerOn)
	if resets, _ := f.snapshot(); len(resets) != 2 || resets[1] != "node-7 On" {
		t.Fatalf("resets = %q, want ForceOff then On", resets)
	}
}

func TestRedfishSystemID(t *testing.T) {
	f := newFakeBMC(t, "blade-1", "blade-2")
	cfg := f.config(rfPass)
	cfg.SystemID = "blade-2"
	if res, err := NewRedfish(cfg).Fence(testCtx(t, 10*time.Second)); err != nil || !res.Confirmed {
		t.Fatalf("Fence = %+v, %v", res, err)
	}
	if resets, _ := f.snapshot(); len(resets) != 1 || resets[0] != "blade-2 ForceOff" {
		t.Fatalf("resets = %q, want ForceOff on blade-2 only", resets)
	}
	cfg.SystemID = "blade-9"
	_, err := NewRedfish(cfg).Fence(testCtx(t, 10*time.Second))
	if !errors.Is(err, ErrNotConfirmed) || !strings.Contains(err.Error(), `system "blade-9" not found`) {
		t.Fatalf("Fence of a missing system: %v", err)
	}
}

func TestRedfishWrongPassword(t *testing.T) {
	f := newFakeBMC(t)
	agent := NewRedfish(f.config("wrong-" + rfPass))
	res, err := agent.Fence(testCtx(t, 10*time.Second))
	if err == nil || res.Confirmed {
		t.Fatalf("Fence with a wrong password = %+v, %v", res, err)
	}
	if !errors.Is(err, ErrNotConfirmed) || !errors.Is(err, ErrRedfishAuth) || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("error %q: want not-confirmed, authentication failure, HTTP 401", err)
	}
	noSecret(t, "Fence error", err.Error())
	noSecret(t, "Fence detail", res.Detail)
	if _, err := agent.Status(testCtx(t, 5*time.Second)); !errors.Is(err, ErrRedfishAuth) {
		t.Fatalf("Status with a wrong password: %v", err)
	} else {
		noSecret(t, "Status error", err.Error())
	}
	if resets, fails := f.snapshot(); len(resets) != 0 || fails == 0 {
		t.Fatalf("resets = %q, auth failures = %d: want none accepted, some refused", resets, fails)
	}
}

func TestRedfishNeverOffIsNotConfirmed(t *testing.T) {
	f := newFakeBMC(t)
	f.set(func(f *fakeBMC) { f.neverOff = true })
	cfg := f.config(rfPass)
	cfg.Timeout = time.Second
	outer := testCtx(t, 60*time.Second)
	res, err := NewRedfish(cfg).Fence(outer)
	if err == nil || res.Confirmed || res.PowerOff {
		t.Fatalf("Fence = %+v, %v; want not confirmed", res, err)
	}
	if !errors.Is(err, ErrNotConfirmed) || !strings.Contains(err.Error(), `PowerState still "PoweringOff"`) {
		t.Fatalf("error %q: want not confirmed, still PoweringOff", err)
	}
	// Bounded by the agent's own timeout, not by the caller's.
	if outer.Err() != nil {
		t.Fatalf("Fence ran until the caller's deadline: %v", outer.Err())
	}
}

func TestRedfishMalformedJSON(t *testing.T) {
	f := newFakeBMC(t)
	f.set(func(f *fakeBMC) { f.badJSON = true })
	agent := NewRedfish(f.config(rfPass))
	res, err := agent.Fence(testCtx(t, 10*time.Second))
	if err == nil || res.Confirmed || !errors.Is(err, ErrNotConfirmed) || !strings.Contains(err.Error(), "malformed JSON") {
		t.Fatalf("Fence = %+v, %v; want a malformed-JSON failure", res, err)
	}
	if ps, err := agent.Status(testCtx(t, 5*time.Second)); err == nil || ps != PowerUnknown {
		t.Fatalf("Status = %v, %v; want unknown with an error", ps, err)
	}

	// Garbage only after the reset was accepted: still not confirmed.
	f2 := newFakeBMC(t)
	f2.set(func(f *fakeBMC) { f.transition, f.badJSONAfterReset = 1000, true })
	cfg := f2.config(rfPass)
	cfg.Timeout = 500 * time.Millisecond
	agent2 := NewRedfish(cfg)
	if res, err := agent2.Fence(testCtx(t, 10*time.Second)); err == nil || res.Confirmed || !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("Fence with garbage while confirming = %+v, %v", res, err)
	}
}

func TestRedfishServerErrors(t *testing.T) {
	f := newFakeBMC(t)
	f.set(func(f *fakeBMC) { f.postStatus = http.StatusInternalServerError })
	res, err := NewRedfish(f.config(rfPass)).Fence(testCtx(t, 10*time.Second))
	if err == nil || res.Confirmed || !errors.Is(err, ErrNotConfirmed) ||
		!strings.Contains(err.Error(), "HTTP 500") || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("Fence with a failing reset = %+v, %v; want HTTP 500 with the BMC's message", res, err)
	}

	f.set(func(f *fakeBMC) { f.postStatus, f.getStatus = 0, http.StatusServiceUnavailable })
	res, err = NewRedfish(f.config(rfPass)).Fence(testCtx(t, 10*time.Second))
	if err == nil || res.Confirmed || !strings.Contains(err.Error(), "HTTP 503") {
		t.Fatalf("Fence with an unavailable system = %+v, %v", res, err)
	}
	if resets, _ := f.snapshot(); len(resets) != 0 {
		t.Fatalf("resets = %q, want none", resets)
	}
}

func TestRedfishTLSAndEndpointChecks(t *testing.T) {
	f := newFakeBMC(t)
	// An unknown certificate is refused unless explicitly allowed.
	cfg := f.config(rfPass)
	cfg.RootCAs = nil
	if _, err := NewRedfish(cfg).Fence(testCtx(t, 10*time.Second)); err == nil || !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("Fence against an untrusted certificate: %v", err)
	}
	cfg.InsecureSkipVerify = true
	if res, err := NewRedfish(cfg).Fence(testCtx(t, 10*time.Second)); err != nil || !res.Confirmed {
		t.Fatalf("Fence with InsecureSkipVerify = %+v, %v", res, err)
	}
	for _, ep := range []string{
		strings.Replace(f.srv.URL, "https://", "http://", 1),
		strings.Replace(f.srv.URL, "https://", "https://u:"+rfPass+"@", 1),
		"https://",
	} {
		cfg.Endpoint = ep
		a := NewRedfish(cfg)
		_, err := a.Fence(testCtx(t, 5*time.Second))
		if err == nil || !errors.Is(err, ErrNotConfirmed) {
			t.Fatalf("Fence with endpoint %q: %v", ep, err)
		}
		noSecret(t, "endpoint error", err.Error())
		if _, err := a.Status(testCtx(t, 5*time.Second)); err == nil {
			t.Fatalf("Status with endpoint %q succeeded", ep)
		}
	}
}

func TestRedfishRefusesForeignTarget(t *testing.T) {
	var hits int
	var mu sync.Mutex
	evil := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
	}))
	t.Cleanup(evil.Close)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redfish/v1/":
			writeJSON(w, map[string]any{"Systems": map[string]string{"@odata.id": "/redfish/v1/Systems"}})
		case "/redfish/v1/Systems":
			writeJSON(w, map[string]any{"Members": []map[string]string{{"@odata.id": "/redfish/v1/Systems/1"}}})
		case "/redfish/v1/Systems/1":
			writeJSON(w, map[string]any{"Id": "1", "PowerState": "On", "Actions": map[string]any{
				"#ComputerSystem.Reset": map[string]string{"target": evil.URL + "/steal"},
			}})
		}
	}))
	t.Cleanup(srv.Close)
	cfg := RedfishConfig{Endpoint: srv.URL, User: rfUser, Password: rfPass, InsecureSkipVerify: true, Timeout: 2 * time.Second}
	_, err := NewRedfish(cfg).Fence(testCtx(t, 10*time.Second))
	if err == nil || !strings.Contains(err.Error(), "points away from the BMC") {
		t.Fatalf("Fence with a foreign reset target: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 0 {
		t.Fatalf("credentials sent to a foreign host (%d requests)", hits)
	}
}

func TestRedfishConfigRedacts(t *testing.T) {
	cfg := RedfishConfig{Endpoint: "https://bmc.example:8443", User: "fence", Password: rfPass}
	agent := NewRedfish(cfg)
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	logger.Info("config", "cfg", cfg, "agent", agent)
	for _, s := range []string{
		fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg),
		fmt.Sprint(agent), fmt.Sprintf("%+v", agent), fmt.Sprintf("%#v", agent),
		buf.String(),
	} {
		noSecret(t, "formatted config", s)
		if !strings.Contains(s, redacted) {
			t.Errorf("%q does not show the password as redacted", s)
		}
	}
}
