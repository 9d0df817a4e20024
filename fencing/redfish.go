package fencing

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"
)

// Defaults for RedfishConfig's zero fields.
const (
	DefaultRedfishTimeout      = 10 * time.Second
	DefaultRedfishPollInterval = 250 * time.Millisecond

	redfishServiceRoot = "/redfish/v1/"
	// redfishMaxBody bounds what we read from a BMC: Redfish resources are
	// a few KiB; anything larger is a broken or hostile service.
	redfishMaxBody = 1 << 20
	resetAction    = "#ComputerSystem.Reset"
)

// Redfish ResetType and PowerState values (DMTF ComputerSystem schema).
const (
	redfishForceOff = "ForceOff"
	redfishOn       = "On"
	redfishOff      = "Off"
)

// ErrRedfishAuth matches a BMC's refusal of our credentials (HTTP 401/403).
var ErrRedfishAuth = errors.New("redfish: authentication failed")

// RedfishConfig addresses one node's BMC over Redfish (DMTF DSP0266).
type RedfishConfig struct {
	// Endpoint is the BMC's base URL, https://host[:port]; plain http is
	// refused because Basic auth would send the password in clear.
	Endpoint string
	User     string
	Password string // never printed; see String, GoString and LogValue
	// SystemID selects the ComputerSystem by its Id (the last segment of
	// its URI). Empty means the first member of the Systems collection,
	// which is the node itself on single-system BMCs.
	SystemID string
	// RootCAs verifies the BMC's certificate; nil means the system pool.
	RootCAs *x509.CertPool
	// InsecureSkipVerify accepts any certificate (BMCs often ship
	// self-signed ones). It exposes the password to a man in the middle.
	InsecureSkipVerify bool
	// Timeout bounds each whole operation (discovery, reset, confirmation
	// polling); 0 means 10 s. The caller's ctx may shorten it.
	Timeout time.Duration
	// PollInterval is how often Fence/Unfence re-read PowerState while
	// waiting for confirmation; 0 means 250 ms.
	PollInterval time.Duration
}

func (c RedfishConfig) withDefaults() RedfishConfig {
	if c.Timeout <= 0 {
		c.Timeout = DefaultRedfishTimeout
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultRedfishPollInterval
	}
	return c
}

func (c RedfishConfig) redactedPassword() string {
	if c.Password == "" {
		return ""
	}
	return redacted
}

// String never includes the password.
func (c RedfishConfig) String() string {
	return fmt.Sprintf("redfish{endpoint=%s user=%q password=%s system=%q insecure=%t timeout=%s}",
		c.Endpoint, c.User, c.redactedPassword(), c.SystemID, c.InsecureSkipVerify, c.Timeout)
}

// GoString covers %#v, which would otherwise print every field verbatim.
func (c RedfishConfig) GoString() string { return c.String() }

// LogValue makes slog print the config with the password redacted.
func (c RedfishConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoint", c.Endpoint),
		slog.String("user", c.User),
		slog.String("password", c.redactedPassword()),
		slog.String("system", c.SystemID),
		slog.Bool("insecure", c.InsecureSkipVerify),
		slog.Duration("timeout", c.Timeout),
	)
}

type redfishAgent struct {
	cfg    RedfishConfig
	base   *url.URL // nil if cfg.Endpoint is invalid; then cfgErr says why
	cfgErr error
	client *http.Client
}

// NewRedfish returns a Fencer that powers the node off with a Redfish
// ComputerSystem.Reset (ForceOff) and confirms PowerState "Off". A bad
// Endpoint is reported by every operation. The agent discovers the system
// and its reset target on every call, holds no connection while idle and
// is safe for concurrent use.
func NewRedfish(cfg RedfishConfig) Fencer {
	a := &redfishAgent{cfg: cfg.withDefaults()}
	a.base, a.cfgErr = parseEndpoint(cfg.Endpoint)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // a BMC is on the management network, never behind a proxy
	tr.TLSClientConfig = &tls.Config{
		RootCAs:            cfg.RootCAs,
		InsecureSkipVerify: cfg.InsecureSkipVerify, // the operator's explicit, documented choice
		MinVersion:         tls.VersionTLS12,
	}
	a.client = &http.Client{
		Transport: tr,
		// Basic auth must not follow a redirect to somewhere else.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if a.base == nil || req.URL.Scheme != a.base.Scheme || req.URL.Host != a.base.Host {
				return errors.New("redirect away from the BMC endpoint refused")
			}
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			return nil
		},
	}
	return a
}

func parseEndpoint(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, fmt.Errorf("redfish: invalid endpoint: %w", err)
	case u.Scheme != "https":
		return nil, fmt.Errorf("redfish: endpoint %q: scheme must be https", u.Redacted())
	case u.Host == "":
		return nil, fmt.Errorf("redfish: endpoint %q has no host", u.Redacted())
	case u.User != nil:
		return nil, errors.New("redfish: endpoint must not contain credentials; use User and Password")
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

func (a *redfishAgent) Name() string {
	if a.base == nil {
		return "redfish:invalid"
	}
	return "redfish:" + a.base.Host
}

// String, GoString and LogValue: see ipmiAgent.
func (a *redfishAgent) String() string       { return a.cfg.String() }
func (a *redfishAgent) GoString() string     { return a.cfg.String() }
func (a *redfishAgent) LogValue() slog.Value { return a.cfg.LogValue() }

func (a *redfishAgent) wrap(op string, err error) error {
	return fmt.Errorf("%s %s: %w", a.Name(), op, &scrubbedError{err: err, secret: a.cfg.Password})
}

// do runs fn bounded by cfg.Timeout and drops idle connections afterwards:
// BMCs serve few concurrent clients.
func (a *redfishAgent) do(ctx context.Context, fn func(ctx context.Context) error) error {
	if a.cfgErr != nil {
		return a.cfgErr
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	defer a.client.CloseIdleConnections()
	return fn(ctx)
}

// resolve turns a resource reference from the BMC into a URL on the
// endpoint, refusing references elsewhere: credentials go only to the BMC.
func (a *redfishAgent) resolve(ref string) (*url.URL, error) {
	r, err := url.Parse(ref)
	if err != nil {
		return nil, fmt.Errorf("invalid resource reference %q: %w", ref, err)
	}
	u := a.base.ResolveReference(r)
	if u.Scheme != a.base.Scheme || u.Host != a.base.Host {
		return nil, fmt.Errorf("resource reference %q points away from the BMC", ref)
	}
	return u, nil
}

// httpStatusError is a non-2xx answer, with the Redfish error message if
// the body carried one.
type httpStatusError struct {
	method, path string
	code         int
	msg          string
}

func (e *httpStatusError) Error() string {
	s := fmt.Sprintf("%s %s: HTTP %d %s", e.method, e.path, e.code, http.StatusText(e.code))
	if e.code == http.StatusUnauthorized || e.code == http.StatusForbidden {
		s += " (authentication failed: check user and password)"
	}
	if e.msg != "" {
		s += ": " + e.msg
	}
	return s
}

func (e *httpStatusError) Is(target error) bool {
	return target == ErrRedfishAuth && (e.code == http.StatusUnauthorized || e.code == http.StatusForbidden)
}

// redfishErrorMessage extracts the message of a Redfish error body
// ({"error": {"message": ..., "@Message.ExtendedInfo": [{"Message": ...}]}}).
func redfishErrorMessage(body []byte) string {
	var e struct {
		Error struct {
			Code     string `json:"code"`
			Message  string `json:"message"`
			Extended []struct {
				Message string `json:"Message"`
			} `json:"@Message.ExtendedInfo"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	parts := []string{}
	if e.Error.Message != "" {
		parts = append(parts, e.Error.Message)
	}
	for _, x := range e.Error.Extended {
		if x.Message != "" && x.Message != e.Error.Message {
			parts = append(parts, x.Message)
		}
	}
	msg := strings.Join(parts, "; ")
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	return msg
}

// request sends one authenticated request; out, if non-nil, receives the
// decoded JSON body of a 2xx answer.
func (a *redfishAgent) request(ctx context.Context, method, ref string, body, out any) error {
	u, err := a.resolve(ref)
	if err != nil {
		return err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return err
	}
	req.SetBasicAuth(a.cfg.User, a.cfg.Password)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("OData-Version", "4.0")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, redfishMaxBody+1))
	if err != nil {
		return fmt.Errorf("%s %s: reading body: %w", method, u.Path, err)
	}
	if len(data) > redfishMaxBody {
		return fmt.Errorf("%s %s: body larger than %d bytes", method, u.Path, redfishMaxBody)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &httpStatusError{method: method, path: u.Path, code: resp.StatusCode, msg: redfishErrorMessage(data)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: malformed JSON: %w", method, u.Path, err)
	}
	return nil
}

type odataRef struct {
	ID string `json:"@odata.id"`
}

type computerSystem struct {
	ID         string `json:"Id"`
	PowerState string `json:"PowerState"`
	Actions    map[string]struct {
		Target  string   `json:"target"`
		Allowed []string `json:"ResetType@Redfish.AllowableValues"`
	} `json:"Actions"`
}

// systemRef finds the ComputerSystem through the service root and the
// Systems collection, as the spec requires clients to (URIs are opaque).
func (a *redfishAgent) systemRef(ctx context.Context) (string, error) {
	var root struct {
		Systems odataRef `json:"Systems"`
	}
	if err := a.request(ctx, http.MethodGet, redfishServiceRoot, nil, &root); err != nil {
		return "", err
	}
	if root.Systems.ID == "" {
		return "", errors.New("service root has no Systems collection")
	}
	var coll struct {
		Members []odataRef `json:"Members"`
	}
	if err := a.request(ctx, http.MethodGet, root.Systems.ID, nil, &coll); err != nil {
		return "", err
	}
	for _, m := range coll.Members {
		if m.ID == "" {
			continue
		}
		if a.cfg.SystemID == "" || path.Base(strings.TrimSuffix(m.ID, "/")) == a.cfg.SystemID {
			return m.ID, nil
		}
	}
	if a.cfg.SystemID != "" {
		return "", fmt.Errorf("system %q not found in %s", a.cfg.SystemID, root.Systems.ID)
	}
	return "", fmt.Errorf("no systems in %s", root.Systems.ID)
}

// findSystem discovers the system and reads it, errors wrapped as the
// agent reports them.
func (a *redfishAgent) findSystem(ctx context.Context) (string, computerSystem, error) {
	ref, err := a.systemRef(ctx)
	if err != nil {
		return "", computerSystem{}, a.wrap("discover system", err)
	}
	cs, err := a.readSystem(ctx, ref)
	if err != nil {
		return "", computerSystem{}, a.wrap("read system", err)
	}
	return ref, cs, nil
}

func (a *redfishAgent) readSystem(ctx context.Context, ref string) (computerSystem, error) {
	var cs computerSystem
	err := a.request(ctx, http.MethodGet, ref, nil, &cs)
	return cs, err
}

// powerState maps Redfish PowerState: only "Off" is off. Transitional
// states still have power applied, so they are on for fencing purposes.
func powerState(s string) (PowerState, error) {
	switch s {
	case redfishOff:
		return PowerOff, nil
	case redfishOn, "PoweringOn", "PoweringOff", "Paused":
		return PowerOn, nil
	default:
		return PowerUnknown, fmt.Errorf("unknown PowerState %q", s)
	}
}

// reset POSTs ResetType to the target the system advertises.
func (a *redfishAgent) reset(ctx context.Context, ref string, cs computerSystem, resetType string) error {
	act, ok := cs.Actions[resetAction]
	if !ok || act.Target == "" {
		return fmt.Errorf("system %s advertises no %s action", ref, resetAction)
	}
	if len(act.Allowed) > 0 && !slices.Contains(act.Allowed, resetType) {
		return fmt.Errorf("system %s does not allow ResetType %s (allowed: %s)", ref, resetType, strings.Join(act.Allowed, ", "))
	}
	return a.request(ctx, http.MethodPost, act.Target, map[string]string{"ResetType": resetType}, nil)
}

// waitPower polls until PowerState is exactly want ("PoweringOn" is not
// "On" yet) or ctx ends.
func (a *redfishAgent) waitPower(ctx context.Context, ref, want string) error {
	t := time.NewTicker(a.cfg.PollInterval)
	defer t.Stop()
	last, lastErr := "", error(nil)
	for {
		cs, err := a.readSystem(ctx, ref)
		if err == nil {
			last = cs.PowerState
			if cs.PowerState == want {
				return nil
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			// The last state seen says more than the read the deadline cut.
			if last != "" || lastErr == nil {
				return fmt.Errorf("PowerState still %q, never %s: %w", last, want, ctx.Err())
			}
			return fmt.Errorf("PowerState never reported %s: %w", want, lastErr)
		case <-t.C:
		}
	}
}

// Fence sends ForceOff (a fenced node cannot be trusted with a graceful
// shutdown) and confirms only once the system reports PowerState "Off".
func (a *redfishAgent) Fence(ctx context.Context) (Result, error) {
	res := Result{Agent: a.Name()}
	err := a.do(ctx, func(ctx context.Context) error {
		ref, cs, err := a.findSystem(ctx)
		if err != nil {
			return err
		}
		if err := a.reset(ctx, ref, cs, redfishForceOff); err != nil {
			// Many BMCs refuse ForceOff when already off; only a fresh
			// read saying "Off" lets that count.
			if cs2, rerr := a.readSystem(ctx, ref); rerr == nil && cs2.PowerState == redfishOff {
				res.Detail = "power already off"
				return nil
			}
			return a.wrap("reset "+redfishForceOff, err)
		}
		if err := a.waitPower(ctx, ref, redfishOff); err != nil {
			return a.wrap("confirm power off", err)
		}
		res.Detail = "BMC reports PowerState Off"
		return nil
	})
	return fenceResult(res, err)
}

// Status reads PowerState; on any error it is PowerUnknown.
func (a *redfishAgent) Status(ctx context.Context) (PowerState, error) {
	ps := PowerUnknown
	err := a.do(ctx, func(ctx context.Context) error {
		_, cs, err := a.findSystem(ctx)
		if err != nil {
			return err
		}
		ps, err = powerState(cs.PowerState)
		if err != nil {
			return a.wrap("read system", err)
		}
		return nil
	})
	if err != nil {
		return PowerUnknown, err
	}
	return ps, nil
}

// Unfence sends ResetType "On" and waits until PowerState is "On".
func (a *redfishAgent) Unfence(ctx context.Context) error {
	return a.do(ctx, func(ctx context.Context) error {
		ref, cs, err := a.findSystem(ctx)
		if err != nil {
			return err
		}
		if cs.PowerState == redfishOn {
			return nil
		}
		if err := a.reset(ctx, ref, cs, redfishOn); err != nil {
			return a.wrap("reset "+redfishOn, err)
		}
		if err := a.waitPower(ctx, ref, redfishOn); err != nil {
			return a.wrap("confirm power on", err)
		}
		return nil
	})
}
