package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tandemhci/tandem/internal/guest"
)

// cloudInit reads the user-data of the cloud-init seed (tandem.cidata: a
// device, or "auto" for the first virtio disk holding an ISO 9660 volume
// labelled cidata) from the raw device, the guest kernel having no isofs,
// and publishes its tandem_test_value for the heartbeats. The device may
// appear after the agent starts, so it is looked for until found.
func (a *agent) cloudInit(ctx context.Context) error {
	for {
		dev, ud, err := readSeed(a.cfg.cidata)
		if err == nil {
			v := guest.CloudInitTestValue(ud)
			a.cloudValue.Store(&v)
			a.log.Info("cloud-init seed read", "device", dev, "user_data_bytes", len(ud), "tandem_test_value", v)
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		if a.seedTries.Add(1)%30 == 1 {
			a.log.Warn("no cloud-init seed yet", "cidata", a.cfg.cidata, "err", err)
		}
	}
}

// readSeed is the device holding the seed and its user-data.
func readSeed(want string) (string, []byte, error) {
	devs := []string{want}
	if want == "auto" {
		devs, _ = filepath.Glob("/dev/vd*")
	}
	var errs []error
	for _, dev := range devs {
		ud, err := readSeedFrom(dev)
		if err == nil {
			return dev, ud, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return "", nil, errors.New("no virtio disks")
	}
	return "", nil, errors.Join(errs...)
}

func readSeedFrom(dev string) ([]byte, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	label, err := guest.ISOLabel(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dev, err)
	}
	if label != "cidata" {
		return nil, fmt.Errorf("%s: volume %q is not cidata", dev, label)
	}
	ud, err := guest.ReadISOFile(f, "user-data", 64<<10)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dev, err)
	}
	return ud, nil
}
