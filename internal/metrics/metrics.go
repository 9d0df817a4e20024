package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tandemhci/tandem/consensus"
)

// Meta is the metadata shard as the gauges read it (state.Meta satisfies
// it).
type Meta interface {
	// Leader is the shard's leader and term as this replica knows them.
	Leader() (replicaID, term uint64, ok bool)
	// LocalState is what this replica applied.
	LocalState() (*consensus.MetaState, error)
}

// Config is what the metrics read at scrape time.
type Config struct {
	// Node is this node's name, the constant "node" label of every metric.
	Node string
	// Member returns this node's metadata replica ID, ok false while the
	// node belongs to no cluster.
	Member func() (replicaID uint64, ok bool)
	// Meta returns the metadata client, nil while there is none.
	Meta func() Meta
}

// Metrics is one node's registry and the metrics it updates itself.
type Metrics struct {
	reg     *prometheus.Registry
	propose *prometheus.HistogramVec
	refused *prometheus.CounterVec
}

// New registers every metric on a registry of its own.
func New(c Config) *Metrics {
	reg := prometheus.NewRegistry()
	node := prometheus.Labels{"node": c.Node}
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "tandem", Name: name, Help: help, ConstLabels: node}, f))
	}
	gauge("cluster_member", "1 when this node belongs to a cluster.", func() float64 {
		_, ok := c.Member()
		return one(ok)
	})
	gauge("raft_metadata_is_leader", "1 when this node leads the metadata shard.", func() float64 {
		id, ok := c.Member()
		meta := c.Meta()
		if !ok || meta == nil {
			return 0
		}
		l, _, ok := meta.Leader()
		return one(ok && l == id)
	})
	gauge("raft_metadata_has_leader", "1 when this node knows a metadata shard leader.", func() float64 {
		meta := c.Meta()
		if meta == nil {
			return 0
		}
		_, _, ok := meta.Leader()
		return one(ok)
	})
	gauge("raft_metadata_term", "Current Raft term of the metadata shard as seen locally.", func() float64 {
		meta := c.Meta()
		if meta == nil {
			return 0
		}
		_, term, _ := meta.Leader()
		return float64(term)
	})
	gauge("raft_metadata_applied_index", "Last metadata log index applied locally.", func() float64 {
		meta := c.Meta()
		if meta == nil {
			return 0
		}
		st, err := meta.LocalState()
		if err != nil {
			return 0
		}
		return float64(st.Applied)
	})
	m := &Metrics{reg: reg, propose: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "tandem", Name: "raft_propose_seconds",
		Help:        "Time to commit and apply a Raft proposal, retries included.",
		ConstLabels: node,
		Buckets:     prometheus.ExponentialBuckets(0.0002, 2, 16),
	}, []string{"shard", "result"})}
	reg.MustRegister(m.propose)
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "tandem", Name: "join_refused_total",
		Help:        "Join attempts this node refused, by reason (rate_limited, malformed_token, wrong_cluster, bad_token, used_token, expired_token, bad_request, name_taken, unavailable, old_release; for a rejoin also unknown_node, removed_node).",
		ConstLabels: node,
	}, []string{"reason"})
	reg.MustRegister(m.refused)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func one(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

// JoinRefused counts one refused join attempt (membership.Config.JoinRefused).
func (m *Metrics) JoinRefused(reason string) { m.refused.WithLabelValues(reason).Inc() }

// ObservePropose records one Raft proposal (consensus.HostConfig.OnPropose).
func (m *Metrics) ObservePropose(shardID uint64, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	shard := "volume"
	if shardID == consensus.MetaShardID {
		shard = "metadata"
	}
	m.propose.WithLabelValues(shard, result).Observe(took.Seconds())
}
