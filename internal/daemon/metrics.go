package daemon

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandemhci/tandem/consensus"
)

// metrics are read from live state at scrape time, so nothing on the hot
// path updates them.
type metrics struct {
	propose *prometheus.HistogramVec
}

func (m *metrics) observePropose(shardID uint64, took time.Duration, err error) {
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

func newMetrics(d *Daemon) *metrics {
	gauge := func(name, help string, f func() float64) {
		d.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "tandem", Name: name, Help: help, ConstLabels: prometheus.Labels{"node": d.cfg.NodeName}}, f))
	}
	gauge("cluster_member", "1 when this node belongs to a cluster.", func() float64 {
		if id, _, _ := d.cluster(); id != nil {
			return 1
		}
		return 0
	})
	gauge("raft_metadata_is_leader", "1 when this node leads the metadata shard.", func() float64 {
		id, meta, _ := d.cluster()
		if id == nil {
			return 0
		}
		if l, _, ok := meta.Host().Leader(consensus.MetaShardID); ok && l == id.ReplicaID {
			return 1
		}
		return 0
	})
	gauge("raft_metadata_has_leader", "1 when this node knows a metadata shard leader.", func() float64 {
		_, meta, _ := d.cluster()
		if meta == nil {
			return 0
		}
		if _, _, ok := meta.Host().Leader(consensus.MetaShardID); ok {
			return 1
		}
		return 0
	})
	gauge("raft_metadata_term", "Current Raft term of the metadata shard as seen locally.", func() float64 {
		_, meta, _ := d.cluster()
		if meta == nil {
			return 0
		}
		_, term, _ := meta.Host().Leader(consensus.MetaShardID)
		return float64(term)
	})
	gauge("raft_metadata_applied_index", "Last metadata log index applied locally.", func() float64 {
		_, meta, _ := d.cluster()
		if meta == nil {
			return 0
		}
		st, err := meta.LocalState()
		if err != nil {
			return 0
		}
		return float64(st.Applied)
	})
	m := &metrics{propose: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "tandem", Name: "raft_propose_seconds",
		Help:        "Time to commit and apply a Raft proposal, retries included.",
		ConstLabels: prometheus.Labels{"node": d.cfg.NodeName},
		Buckets:     prometheus.ExponentialBuckets(0.0002, 2, 16),
	}, []string{"shard", "result"})}
	d.reg.MustRegister(m.propose)
	return m
}
