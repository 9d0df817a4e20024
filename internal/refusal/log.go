package refusal

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxKeys bounds the distinct sources a Log keeps per interval; the rest
// are counted as "other".
const maxKeys = 64

// Log aggregates refusals: the first one after a quiet interval is logged
// at once (an operator's mistyped token shows up immediately), later ones
// are counted and logged as one summary line when the interval ends. It is
// safe for concurrent use.
type Log struct {
	log      *slog.Logger
	msg      string
	interval time.Duration

	mu      sync.Mutex
	last    time.Time // when a line was last written
	total   int
	reasons map[string]int
	sources map[string]int
	lastErr string
	timer   *time.Timer
}

// NewLog writes msg at WARN to log, at most once per interval; a nil log
// discards.
func NewLog(log *slog.Logger, msg string, interval time.Duration) *Log {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Log{log: log, msg: msg, interval: interval, reasons: map[string]int{}, sources: map[string]int{}}
}

// Refused records one refusal from src for reason, with the error text the
// caller got (the last one is shown).
func (l *Log) Refused(src, reason, detail string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	l.reasons[reason]++
	if _, ok := l.sources[src]; ok || len(l.sources) < maxKeys {
		l.sources[src]++
	} else {
		l.sources["other"]++
	}
	l.lastErr = detail
	if wait := l.interval - now.Sub(l.last); wait > 0 {
		if l.timer == nil {
			l.timer = time.AfterFunc(wait, l.flushTimer)
		}
		return
	}
	l.flushLocked(now)
}

func (l *Log) flushTimer() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = nil
	if l.total > 0 {
		l.flushLocked(time.Now())
	}
}

// Flush writes what was counted since the last line, if anything.
func (l *Log) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	if l.total > 0 {
		l.flushLocked(time.Now())
	}
}

func (l *Log) flushLocked(now time.Time) {
	l.log.Warn(l.msg, "count", l.total, "reasons", summary(l.reasons), "sources", summary(l.sources), "last_error", l.lastErr)
	l.last = now
	l.total = 0
	clear(l.reasons)
	clear(l.sources)
}

// summary is "a=3 b=1", largest first, at most 5 entries.
func summary(m map[string]int) string {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for i, k := range keys {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("(+%d more)", len(keys)-i))
			break
		}
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
