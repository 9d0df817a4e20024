package consensus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/lni/dragonboat/v4/logger"
)

// dragonboatPackages are the logger names dragonboat uses internally.
func dragonboatPackages() []string {
	return []string{"LogDB", "config", "dragonboat", "gossip", "grpc", "logdb", "pebblekv", "raft", "raft-mt", "raftpb", "registry", "rsm", "server", "settings", "tan", "tools", "transport"}
}

// InstallLogger routes dragonboat's errors into l. Its warn level logs every
// vote and every stale read, which would drown the daemon's own log. The
// transport's errors are a peer going away, which the cluster expects and
// reports itself, so they are logged as warnings. Dragonboat keeps its
// logger factory process-wide and panics if it is set twice, so only main
// calls this, once, before creating a Host.
func InstallLogger(l *slog.Logger) {
	logger.SetLoggerFactory(func(pkg string) logger.ILogger {
		return &slogAdapter{l: l.With("component", "raft", "pkg", pkg), level: slog.LevelError, demote: pkg == "transport"}
	})
	for _, p := range dragonboatPackages() {
		logger.GetLogger(p).SetLevel(logger.ERROR)
	}
}

// QuietLogs lowers dragonboat's default logger to errors only; for tests and
// tools that do not install a logger.
func QuietLogs() {
	for _, p := range dragonboatPackages() {
		logger.GetLogger(p).SetLevel(logger.ERROR)
	}
}

type slogAdapter struct {
	l     *slog.Logger
	level slog.Level
	// demote logs errors as warnings (still shown at the error threshold).
	demote bool
}

func (a *slogAdapter) SetLevel(l logger.LogLevel) {
	switch l {
	case logger.DEBUG:
		a.level = slog.LevelDebug
	case logger.INFO:
		a.level = slog.LevelInfo
	case logger.WARNING:
		a.level = slog.LevelWarn
	default:
		a.level = slog.LevelError
	}
}

func (a *slogAdapter) log(lv slog.Level, format string, args ...any) {
	if lv < a.level {
		return
	}
	a.l.Log(context.Background(), lv, fmt.Sprintf(format, args...))
}

func (a *slogAdapter) Debugf(format string, args ...any) { a.log(slog.LevelDebug, format, args...) }
func (a *slogAdapter) Infof(format string, args ...any)  { a.log(slog.LevelInfo, format, args...) }
func (a *slogAdapter) Warningf(format string, args ...any) {
	// dragonboat's own TLS is off because Raft runs over raftnet's TLS
	// transport; its warning that traffic is insecure would be false.
	if strings.HasPrefix(format, "mutual TLS disabled") {
		return
	}
	a.log(slog.LevelWarn, format, args...)
}
func (a *slogAdapter) Errorf(format string, args ...any) {
	if a.demote {
		if a.level <= slog.LevelError {
			a.l.Log(context.Background(), slog.LevelWarn, fmt.Sprintf(format, args...))
		}
		return
	}
	a.log(slog.LevelError, format, args...)
}
func (a *slogAdapter) Panicf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	a.l.Error(msg)
	panic(msg)
}
