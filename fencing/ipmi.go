package fencing

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"
)

// Defaults for IPMIConfig's zero fields.
const (
	DefaultIPMIPort         = 623
	DefaultIPMICipherSuite  = 3 // others make the first connect stall 4–10 s (RECIPES.md)
	DefaultIPMITimeout      = 10 * time.Second
	DefaultIPMIPollInterval = 200 * time.Millisecond

	redacted = "[REDACTED]"
	// closeTimeout bounds the session close, which runs even after ctx
	// expired so that we do not leak BMC sessions (BMCs have few).
	closeTimeout = time.Second
)

// IPMIConfig addresses one node's BMC over IPMI v2.0 (lanplus).
type IPMIConfig struct {
	Host     string
	Port     int // 0 means 623
	User     string
	Password string // never printed; see String, GoString and LogValue
	// CipherSuite is the RMCP+ cipher suite ID; 0 means 3.
	CipherSuite int
	// Timeout bounds each whole operation (connect, command, confirmation
	// polling); 0 means 10 s. The caller's ctx may shorten it.
	Timeout time.Duration
	// PollInterval is how often Fence/Unfence re-read the power state while
	// waiting for the BMC to confirm; 0 means 200 ms.
	PollInterval time.Duration
}

func (c IPMIConfig) withDefaults() IPMIConfig {
	if c.Port == 0 {
		c.Port = DefaultIPMIPort
	}
	if c.CipherSuite == 0 {
		c.CipherSuite = DefaultIPMICipherSuite
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultIPMITimeout
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultIPMIPollInterval
	}
	return c
}

func (c IPMIConfig) addr() string {
	return net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
}

func (c IPMIConfig) redactedPassword() string {
	if c.Password == "" {
		return ""
	}
	return redacted
}

// String never includes the password.
func (c IPMIConfig) String() string {
	return fmt.Sprintf("ipmi{host=%s port=%d user=%q password=%s cipher_suite=%d timeout=%s}",
		c.Host, c.Port, c.User, c.redactedPassword(), c.CipherSuite, c.Timeout)
}

// GoString covers %#v, which would otherwise print every field verbatim.
func (c IPMIConfig) GoString() string { return c.String() }

// LogValue makes slog print the config with the password redacted.
func (c IPMIConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("host", c.Host),
		slog.Int("port", c.Port),
		slog.String("user", c.User),
		slog.String("password", c.redactedPassword()),
		slog.Int("cipher_suite", c.CipherSuite),
		slog.Duration("timeout", c.Timeout),
	)
}

type ipmiAgent struct {
	cfg IPMIConfig
}

// NewIPMI returns a Fencer that powers the node off through its BMC.
// Each call opens its own short session, so the agent is safe for
// concurrent use and holds no BMC session while idle.
func NewIPMI(cfg IPMIConfig) Fencer {
	return &ipmiAgent{cfg: cfg.withDefaults()}
}

func (a *ipmiAgent) Name() string { return "ipmi:" + a.cfg.addr() }

// String and GoString exist because fmt prints unexported struct fields
// without calling their String methods, which would leak the password.
func (a *ipmiAgent) String() string       { return a.cfg.String() }
func (a *ipmiAgent) GoString() string     { return a.cfg.String() }
func (a *ipmiAgent) LogValue() slog.Value { return a.cfg.LogValue() }

// scrubbedError hides the password should the IPMI library ever echo it,
// while keeping errors.Is/As working on the cause (e.g. context errors).
type scrubbedError struct {
	err    error
	secret string
}

func (e *scrubbedError) Error() string {
	if e.secret == "" {
		return e.err.Error()
	}
	return strings.ReplaceAll(e.err.Error(), e.secret, redacted)
}

func (e *scrubbedError) Unwrap() error { return e.err }

func (a *ipmiAgent) wrap(op string, err error) error {
	return fmt.Errorf("%s %s: %w", a.Name(), op, &scrubbedError{err: err, secret: a.cfg.Password})
}

// session runs fn within one authenticated lanplus session, bounded by
// cfg.Timeout.
func (a *ipmiAgent) session(ctx context.Context, fn func(ctx context.Context, c *client.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	c, err := client.NewClient(a.cfg.Host, a.cfg.Port, a.cfg.User, a.cfg.Password)
	if err != nil {
		return a.wrap("new client", err)
	}
	// Per-packet timeout: short enough that retries fit inside cfg.Timeout.
	perTry := min(a.cfg.Timeout/4, time.Second)
	c = c.WithInterface(client.InterfaceLanplus).
		WithCipherSuiteID(types.CipherSuiteID(a.cfg.CipherSuite)).
		WithTimeout(perTry)
	if err := c.Connect(ctx); err != nil {
		return a.wrap("connect", err)
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer ccancel()
		_ = c.Close(cctx) // best effort: the BMC times idle sessions out anyway
	}()
	return fn(ctx, c)
}

func (a *ipmiAgent) readPower(ctx context.Context, c *client.Client) (PowerState, error) {
	st, err := c.GetChassisStatus(ctx)
	if err != nil {
		return PowerUnknown, a.wrap("get chassis status", err)
	}
	if st.PowerIsOn {
		return PowerOn, nil
	}
	return PowerOff, nil
}

// waitPower polls until the BMC reports want, or ctx ends.
func (a *ipmiAgent) waitPower(ctx context.Context, c *client.Client, want PowerState) error {
	t := time.NewTicker(a.cfg.PollInterval)
	defer t.Stop()
	for {
		ps, err := a.readPower(ctx, c)
		if err == nil && ps == want {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("power never reported %s: %w", want, err)
			}
			return fmt.Errorf("%s: power still %s: %w", a.Name(), ps, ctx.Err())
		case <-t.C:
		}
	}
}

// Fence asks the BMC to power down (hard, not a soft ACPI shutdown: a node
// that is being fenced cannot be trusted to shut down) and confirms only
// once the BMC reports the power as off.
func (a *ipmiAgent) Fence(ctx context.Context) (Result, error) {
	res := Result{Agent: a.Name()}
	err := a.session(ctx, func(ctx context.Context, c *client.Client) error {
		if _, err := c.ChassisControl(ctx, chassis.ChassisControlPowerDown); err != nil {
			// Some BMCs reject power-down when already off; only a status
			// read saying "off" lets that count.
			if ps, serr := a.readPower(ctx, c); serr == nil && ps == PowerOff {
				res.Detail = "power already off"
				return nil
			}
			return a.wrap("chassis power down", err)
		}
		if err := a.waitPower(ctx, c, PowerOff); err != nil {
			return err
		}
		res.Detail = "BMC reports power off"
		return nil
	})
	return fenceResult(res, err)
}

// Status reads the chassis power state; on any error it is PowerUnknown.
func (a *ipmiAgent) Status(ctx context.Context) (PowerState, error) {
	ps := PowerUnknown
	err := a.session(ctx, func(ctx context.Context, c *client.Client) error {
		var err error
		ps, err = a.readPower(ctx, c)
		return err
	})
	if err != nil {
		return PowerUnknown, err
	}
	return ps, nil
}

// Unfence powers the node on and waits until the BMC reports it on.
func (a *ipmiAgent) Unfence(ctx context.Context) error {
	return a.session(ctx, func(ctx context.Context, c *client.Client) error {
		if _, err := c.ChassisControl(ctx, chassis.ChassisControlPowerUp); err != nil {
			return a.wrap("chassis power up", err)
		}
		return a.waitPower(ctx, c, PowerOn)
	})
}
