package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ServerConfig configures the embedded NATS server.
type ServerConfig struct {
	// Host and Port to listen on. Port 0 means 4222, falling back to a
	// random free port when 4222 is taken; Port -1 means a random port.
	Host string
	Port int
	// StoreDir is JetStream's file store directory (required).
	StoreDir string
	// MaxPayload is the largest message; it must hold the largest image plus headers.
	MaxPayload int32
	// SyncAlways fsyncs every JetStream write (the resize queue relies on it).
	SyncAlways bool
	// DontListen serves in-process connections only.
	DontListen bool
	// Logger receives the server's own log lines (nil: silent).
	Logger *slog.Logger
}

// PayloadFor returns the max_payload for images up to maxImage bytes: the
// image plus 64 KiB of headroom for headers and envelopes, at least 1 MiB.
func PayloadFor(maxImage int64) int32 {
	p := maxImage + 64<<10
	if p < 1<<20 {
		p = 1 << 20
	}
	return int32(p)
}

// RunServer starts an embedded NATS server with JetStream and waits until it
// accepts connections. The caller shuts it down with Shutdown and
// WaitForShutdown.
func RunServer(cfg ServerConfig) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("bus: embedded server needs a store dir")
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := cfg.Port
	if port == 0 {
		port = 4222
		if !portFree(host, port) {
			port = server.RANDOM_PORT
		}
	}
	opts := &server.Options{
		ServerName: "cachepool-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		MaxPayload: cfg.MaxPayload,
		SyncAlways: cfg.SyncAlways,
		DontListen: cfg.DontListen,
		NoSigs:     true,
		NoLog:      cfg.Logger == nil,
	}
	if opts.MaxPayload == 0 {
		opts.MaxPayload = PayloadFor(8 << 20)
	}
	if opts.MaxPayload > 64<<20 {
		return nil, fmt.Errorf("bus: max payload %d is above 64 MiB", opts.MaxPayload)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("bus: embedded server: %w", err)
	}
	if cfg.Logger != nil {
		srv.SetLoggerV2(&serverLogger{log: cfg.Logger}, false, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("bus: embedded server did not become ready within 15s")
	}
	return srv, nil
}

func portFree(host string, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// serverLogger adapts slog to the server's logger interface.
type serverLogger struct{ log *slog.Logger }

func (l *serverLogger) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }

// CheckMaxPayload fails when the server nc is connected to cannot carry an
// image of maxImage bytes.
func CheckMaxPayload(nc *nats.Conn, maxImage int64) error {
	need := maxImage + 16<<10
	if got := nc.MaxPayload(); got < need {
		return fmt.Errorf("bus: the NATS server's max_payload is %d bytes, too small for images of %d bytes: raise max_payload to at least %d or lower --max-image-size", got, maxImage, need)
	}
	return nil
}
