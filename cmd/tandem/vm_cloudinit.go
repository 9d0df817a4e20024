package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tandemhci/tandem/internal/cloudinit"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// readCloudInit reads the files of 'vm create --cloud-init' and checks
// them as the daemon will (it checks again), so a bad file is refused
// before anything is created; nil when no user-data is given.
func readCloudInit(name, userData, metaData, networkConfig string) (*tandemv1.CloudInit, error) {
	if userData == "" {
		if metaData != "" || networkConfig != "" {
			return nil, usageErrorf("--meta-data and --network-config go with --cloud-init USER-DATA")
		}
		return nil, nil
	}
	ci := &tandemv1.CloudInit{}
	for _, f := range []struct {
		flag, path string
		dst        *[]byte
	}{{"--cloud-init", userData, &ci.UserData}, {"--meta-data", metaData, &ci.MetaData}, {"--network-config", networkConfig, &ci.NetworkConfig}} {
		if f.path == "" {
			continue
		}
		b, err := readBounded(f.path, cloudinit.MaxTotal)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.flag, err)
		}
		*f.dst = b
	}
	seed := cloudinit.Seed{UserData: ci.UserData, MetaData: ci.MetaData, NetworkConfig: ci.NetworkConfig}
	// The UUID is not known yet: a placeholder of its length sizes the
	// default meta-data.
	if err := seed.Validate("00000000-0000-0000-0000-000000000000", name); err != nil {
		return nil, fmt.Errorf("--cloud-init: %w", err)
	}
	return ci, nil
}

// readBounded reads a regular file of at most max bytes.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is %d bytes, more than %d (64 KiB, the bound of a cloud-init seed)", path, fi.Size(), max)
	}
	if len(b) == 0 {
		return nil, errors.New(path + " is empty")
	}
	return b, nil
}
