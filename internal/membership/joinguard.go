package membership

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tandemhci/tandem/consensus"
	"github.com/tandemhci/tandem/internal/refusal"
)

// A join needs no certificate: anyone who reaches the backend port may
// try. Attempts are limited per source address before anything else is
// looked at, and refusals are counted by reason (JoinRefused, a metric) and
// logged as one summary line per interval, so a flood costs neither Raft
// entries nor a log line per attempt.

// Join attempts allowed per source address: a burst, then one more every
// joinEvery. A real joiner sends one request (a mistyped token a few).
const (
	joinBurst    = 10
	joinEvery    = 2 * time.Second
	joinLogEvery = time.Minute
)

// Reasons a join is refused, the label values of the refusal metric.
const (
	RefusedRateLimited  = "rate_limited"
	RefusedMalformed    = "malformed_token"
	RefusedWrongCluster = "wrong_cluster"
	RefusedBadToken     = "bad_token"
	RefusedUsedToken    = "used_token"
	RefusedExpiredToken = "expired_token"
	RefusedBadRequest   = "bad_request"
	RefusedNameTaken    = "name_taken"
	RefusedUnavailable  = "unavailable"
	// RefusedOldRelease: the node's protocol level is below the cluster
	// version (it runs an older release than the members).
	RefusedOldRelease = "old_release"
)

// joinGuard limits, counts and logs join attempts.
type joinGuard struct {
	limit   *refusal.Limiter
	log     *refusal.Log
	counted func(reason string)
}

func newJoinGuard(log *slog.Logger, counted func(string)) *joinGuard {
	if counted == nil {
		counted = func(string) {}
	}
	return &joinGuard{
		limit:   refusal.NewLimiter(joinBurst, joinEvery),
		log:     refusal.NewLog(log, "join attempts refused", joinLogEvery),
		counted: counted,
	}
}

// refused records a refusal of src.
func (g *joinGuard) refused(src, reason string, err error, now time.Time) {
	g.counted(reason)
	g.log.Refused(src, reason, status.Convert(err).Message(), now)
}

// joinSource is the address a join comes from (the gRPC peer).
func joinSource(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		return refusal.SourceOf(p.Addr)
	}
	return "unknown"
}

// joinRefusal is a refused join with the reason it is counted under.
type joinRefusal struct {
	reason string
	err    error
}

func (r *joinRefusal) Error() string { return r.err.Error() }

// refuse tags err with the reason it is counted under.
func refuse(reason string, err error) error { return &joinRefusal{reason: reason, err: err} }

// refusalOf is the reason and the API error of a refused join; an error
// that was not tagged counts as unavailable (quorum, timeouts, internal).
func refusalOf(err error) (string, error) {
	var r *joinRefusal
	if errors.As(err, &r) {
		return r.reason, r.err
	}
	return RefusedUnavailable, err
}

// metaRefusal is the reason for a refusal by the metadata's join check or
// by the join itself.
func metaRefusal(err error) string {
	switch {
	case errors.Is(err, consensus.ErrTokenInvalid):
		return RefusedBadToken
	case errors.Is(err, consensus.ErrTokenUsed):
		return RefusedUsedToken
	case errors.Is(err, consensus.ErrTokenExpired):
		return RefusedExpiredToken
	case errors.Is(err, consensus.ErrNodeExists):
		return RefusedNameTaken
	}
	return RefusedUnavailable
}
