package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// PingInterval is how often a connection pings the server; a dead server
// is noticed within two intervals.
const PingInterval = 5 * time.Second

// ConnOptions returns the options every cachepool connection uses: a name,
// reconnecting forever with jittered backoff, a ping interval of
// PingInterval, and logged disconnects, reconnects and async errors.
func ConnOptions(name string, log *slog.Logger) []nats.Option {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.PingInterval(PingInterval),
		nats.MaxPingsOutstanding(2),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(64 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil { // our own drain or close
				log.Debug("nats connection closed", "conn", name)
				return
			}
			log.Warn("nats disconnected", "conn", name, "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "conn", name, "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("nats async error", "conn", name, "subject", subj, "err", err)
		}),
	}
}

// Connect dials url with ConnOptions plus extra options and waits until the
// connection is up or ctx ends. Authentication failures and TLS handshake
// refusals (a certificate missing or not trusted) are returned at once
// rather than retried silently.
func Connect(ctx context.Context, url, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := append(ConnOptions(name, log), extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("bus: connect %s: %w", name, err)
	}
	for !nc.IsConnected() {
		if lastErr := nc.LastError(); lastErr != nil && isAuthError(lastErr) {
			nc.Close()
			return nil, fmt.Errorf("bus: connect %s: the server refused our credentials: %w", name, lastErr)
		}
		if lastErr := nc.LastError(); lastErr != nil && isTLSRefusal(lastErr) {
			nc.Close()
			return nil, fmt.Errorf("bus: connect %s: the TLS handshake failed (check the CA, client certificate and key): %w", name, lastErr)
		}
		select {
		case <-ctx.Done():
			lastErr := nc.LastError()
			nc.Close()
			return nil, fmt.Errorf("bus: connect %s to %s: %w (last error: %v)", name, url, ctx.Err(), lastErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nc, nil
}

func isAuthError(err error) bool {
	return err == nats.ErrAuthorization || err == nats.ErrAuthExpired || err == nats.ErrAuthRevoked ||
		err == nats.ErrAccountAuthExpired || err == nats.ErrPermissionViolation
}

// isTLSRefusal reports whether err is a TLS failure that retrying cannot
// fix: the server answered the handshake with a TLS alert (say, a client
// certificate required or not trusted), or we did not trust the server's
// certificate.
func isTLSRefusal(err error) bool {
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "remote error" {
		return true
	}
	return strings.Contains(err.Error(), "remote error: tls:")
}

// Drain drains nc and waits until it is closed or timeout passes.
func Drain(nc *nats.Conn, timeout time.Duration) {
	if nc == nil || nc.IsClosed() {
		return
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(timeout):
		nc.Close()
	}
}
