package rbd

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// goodKey is a well-formed cephx key (28 bytes of base64), not a real one.
const goodKey = "AQAAr1JnAAAAABAAAAECAwQFBgcICQoLDA0ODw=="

func TestConfigValidate(t *testing.T) {
	good := Config{MonHost: "[v2:10.0.0.5:3300,v1:10.0.0.5:6789]", Client: "tandem", Key: goodKey, Pool: "rbd"}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	if s := good.String(); strings.Contains(s, goodKey) || !strings.Contains(s, "client.tandem") {
		t.Errorf("String() = %q: must name the client and never show the key", s)
	}
	for name, mod := range map[string]func(*Config){
		"no monitor":     func(c *Config) { c.MonHost = " " },
		"no client":      func(c *Config) { c.Client = "" },
		"client. prefix": func(c *Config) { c.Client = "client.tandem" },
		"no pool":        func(c *Config) { c.Pool = "" },
		"pool with /":    func(c *Config) { c.Pool = "a/b" },
		"control char":   func(c *Config) { c.Pool = "a\nb" },
		"no key":         func(c *Config) { c.Key = "" },
		"key not base64": func(c *Config) { c.Key = "not a key!" },
		"key too short":  func(c *Config) { c.Key = "AQBv" },
		"neg timeout":    func(c *Config) { c.MonTimeout = -1 },
	} {
		c := good
		mod(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate() = %v, want ErrInvalid", name, err)
		}
		if err != nil && strings.Contains(err.Error(), goodKey) {
			t.Errorf("%s: error %q shows the key", name, err)
		}
		// Connect and Open refuse it in either build, before any Ceph call.
		if _, err := Connect(context.Background(), c); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Connect() = %v, want ErrInvalid", name, err)
		}
	}
}

func TestNames(t *testing.T) {
	for _, n := range []string{"", "a/b", "a@b", "UPPER", strings.Repeat("x", 64), "..", "a b"} {
		if err := ImageName(n); !errors.Is(err, ErrInvalid) {
			t.Errorf("ImageName(%q) = %v, want ErrInvalid", n, err)
		}
	}
	for _, n := range []string{"vm1-disk0", "a", "x_y"} {
		if err := ImageName(n); err != nil {
			t.Errorf("ImageName(%q) = %v", n, err)
		}
	}
	for _, s := range []int64{0, -4096, 4095, 4097, 65<<40 + 4096} {
		if err := ImageSize(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ImageSize(%d) = %v, want ErrInvalid", s, err)
		}
	}
	if err := ImageSize(1 << 30); err != nil {
		t.Errorf("ImageSize(1 GiB) = %v", err)
	}
}
