package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/internal/adminclient"
	tandemv1 "github.com/tandemhci/tandem/proto/tandemv1"
)

// firstbootPath is written by the installer and removed once the node is
// in a cluster.
const firstbootPath = "/etc/tandem/firstboot.yaml"

// Backoff of the first-boot retries.
const (
	firstDelay = 5 * time.Second
	maxDelay   = 5 * time.Minute
)

// clusterAPI is the part of the local tandemd the first boot uses.
type clusterAPI interface {
	Status(ctx context.Context) (*tandemv1.ClusterStatus, error)
	Create(ctx context.Context, name string) error
	Join(ctx context.Context, addr, token string) error
}

// localAPI is tandemd's admin socket.
type localAPI struct{ c *adminclient.Client }

func (l localAPI) Status(ctx context.Context) (*tandemv1.ClusterStatus, error) {
	return l.c.Cluster.Status(ctx, &tandemv1.StatusRequest{})
}

func (l localAPI) Create(ctx context.Context, name string) error {
	_, err := l.c.Cluster.Create(ctx, &tandemv1.CreateClusterRequest{Name: name})
	return err
}

func (l localAPI) Join(ctx context.Context, addr, token string) error {
	_, err := l.c.Cluster.Join(ctx, &tandemv1.JoinClusterRequest{Address: addr, Token: token})
	return err
}

func readFirstboot(path string) (firstbootFile, error) {
	var f firstbootFile
	b, err := os.ReadFile(path)
	if err != nil {
		return f, err
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%s is not valid YAML: %w", path, err)
	}
	switch {
	case f.Create == "" && f.Join == "":
		return f, fmt.Errorf("%s names neither create nor join", path)
	case f.Join != "" && strings.TrimSpace(f.Token) == "":
		return f, fmt.Errorf("%s has a join address but no token", path)
	}
	f.Token = strings.TrimSpace(f.Token)
	return f, nil
}

// explainSetup turns a failed create or join into what the operator sees:
// what went wrong and what to do.
func explainSetup(err error, f firstbootFile, path string) string {
	why := adminclient.Explain(err)
	if f.Create != "" {
		return fmt.Sprintf("creating cluster %q failed: %s. See 'journalctl -u tandemd'.", f.Create, why)
	}
	st, _ := status.FromError(err)
	msg := strings.ToLower(st.Message())
	switch {
	case st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded ||
		strings.Contains(msg, "connection refused") || strings.Contains(msg, "no route") || strings.Contains(msg, "i/o timeout"):
		return fmt.Sprintf("cannot reach the cluster member at %s: %s. Check the backend network "+
			"('ip address', 'ping', /etc/systemd/network/10-backend.network) and that tandemd runs on that member; "+
			"or put another member's address as join: in %s.", f.Join, why, path)
	case strings.Contains(msg, "token") || st.Code() == codes.PermissionDenied || st.Code() == codes.Unauthenticated:
		return fmt.Sprintf("the cluster member at %s refused the join token: %s. Make a new token on a member "+
			"('tandem cluster token') and write it as token: in %s; this node retries by itself.", f.Join, why, path)
	case st.Code() == codes.ResourceExhausted:
		return fmt.Sprintf("the cluster member at %s asks to wait: %s.", f.Join, why)
	default:
		return fmt.Sprintf("joining the cluster through %s failed: %s. See 'journalctl -u tandemd'; "+
			"fix %s or join by hand with 'tandem cluster join %s --token-file FILE'.", f.Join, why, path, f.Join)
	}
}

// firstboot creates or joins the cluster named in path through the local
// tandemd, retrying with backoff until the node is a member; every failure
// is shown on the consoles and in the journal. The file is re-read before
// each attempt, so an operator can fix a token without restarting anything.
// Once the node is a member the file (with its token) is removed.
func firstboot(ctx context.Context, con *console, path string, api clusterAPI, sleep func(context.Context, time.Duration) error, after func(context.Context, *tandemv1.ClusterStatus)) error {
	delay := firstDelay
	wait := func(why string) error {
		con.Errorf("%s Next attempt in %s.", why, delay)
		err := sleep(ctx, delay)
		delay = min(2*delay, maxDelay)
		return err
	}
	for attempt := 1; ; attempt++ {
		f, err := readFirstboot(path)
		if errors.Is(err, os.ErrNotExist) {
			con.Infof("%s is gone: nothing to do", path)
			return nil
		}
		if err != nil {
			if err := wait(err.Error() + " Fix it; this node retries by itself."); err != nil {
				return err
			}
			continue
		}
		st, err := api.Status(ctx)
		if err != nil {
			if err := wait(fmt.Sprintf("tandemd does not answer (%s); see 'systemctl status tandemd' and 'journalctl -u tandemd'.", adminclient.Explain(err))); err != nil {
				return err
			}
			continue
		}
		if st.GetInitialized() {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				con.Errorf("could not remove %s (it holds the used join token): %v", path, err)
			}
			con.Infof("this node is a member of cluster %q (%d of %d voters online)", st.GetClusterName(), st.GetVotesOnline(), st.GetVoters())
			if after != nil {
				after(ctx, st)
			}
			return nil
		}
		if f.Create != "" {
			con.Infof("creating cluster %q (attempt %d)", f.Create, attempt)
			err = api.Create(ctx, f.Create)
		} else {
			con.Infof("joining the cluster through %s (attempt %d)", f.Join, attempt)
			err = api.Join(ctx, f.Join, f.Token)
		}
		if err != nil {
			if err := wait(explainSetup(err, f, path)); err != nil {
				return err
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
