package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// TestServeWithNATSSecurityOptions runs `cachepool serve stats` as its own
// process against a real NATS server secured in each of the standard ways
// (TLS with a client certificate, an nkey seed, a token in the URL, a
// credentials file in operator/JWT mode) and proves it connected and
// serves: its micro service answers $SRV.PING through a separate
// connection with the same credentials, and the server reports the
// process's connection authenticated the expected way. Where a wrong
// setting can be shown, the
// process must exit non-zero with a message naming the problem instead of
// retrying silently (no client certificate, a server certificate from an
// untrusted CA, an nkey the server does not know, a credentials file of
// another operator).
func TestServeWithNATSSecurityOptions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts cachepool processes")
	}
	cachepoolBinary(t) // build once, outside the per-case timings

	t.Run("tls client certificate", func(t *testing.T) {
		pki := newTestPKI(t)
		srv := runSecureServer(t, func(o *server.Options) {
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
				CertFile: pki.serverCert, KeyFile: pki.serverKey, CaFile: pki.ca, Verify: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			o.TLSConfig, o.TLSVerify, o.TLSTimeout = tc, true, 5
		})
		url := fmt.Sprintf("tls://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port)

		start := time.Now()
		serveStats(t, url, "--nats-ca", pki.ca, "--nats-cert", pki.clientCert, "--nats-key", pki.clientKey)
		waitServes(t, url, nats.RootCAs(pki.ca), nats.ClientCert(pki.clientCert, pki.clientKey))
		c := statsConn(t, srv)
		if c.TLSVersion == "" || len(c.TLSPeerCerts) == 0 || c.TLSPeerCerts[0].Subject != "CN=cachepool-stats" {
			t.Fatalf("stats connection not over TLS with the client certificate: tls %q peer certs %+v", c.TLSVersion, c.TLSPeerCerts)
		}
		t.Logf("serve stats over TLS (%s, client cert %s) served after %v", c.TLSVersion, c.TLSPeerCerts[0].Subject, time.Since(start).Round(time.Millisecond))

		// The CA alone, no client certificate: the server refuses the
		// handshake and the process must say so and exit.
		start = time.Now()
		p := serveStats(t, url, "--nats-ca", pki.ca)
		code, out := waitExit(t, p, 20*time.Second)
		if code == 0 {
			t.Fatalf("serve stats without a client certificate exited 0:\n%s", out)
		}
		low := strings.ToLower(out)
		if !strings.Contains(low, "tls") || !strings.Contains(low, "certificate") {
			t.Fatalf("serve stats without a client certificate does not name the TLS certificate problem:\n%s", out)
		}
		t.Logf("without a client certificate: exit %d after %v: %s", code, time.Since(start).Round(time.Millisecond), lastLine(out))

		// A CA that did not sign the server's certificate: the process
		// refuses the server, says so and exits.
		other := newTestPKI(t)
		start = time.Now()
		p = serveStats(t, url, "--nats-ca", other.ca, "--nats-cert", pki.clientCert, "--nats-key", pki.clientKey)
		code, out = waitExit(t, p, 20*time.Second)
		if code == 0 {
			t.Fatalf("serve stats trusting another CA exited 0:\n%s", out)
		}
		if low := strings.ToLower(out); !strings.Contains(low, "tls") || !strings.Contains(low, "certificate") {
			t.Fatalf("serve stats trusting another CA does not name the TLS certificate problem:\n%s", out)
		}
		t.Logf("server certificate from an untrusted CA: exit %d after %v: %s", code, time.Since(start).Round(time.Millisecond), lastLine(out))
	})

	t.Run("nkey seed", func(t *testing.T) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		srv := runSecureServer(t, func(o *server.Options) {
			o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
		})
		dir := t.TempDir()
		seedFile := filepath.Join(dir, "user.nk")
		writeSecret(t, seedFile, seed)
		url := srv.ClientURL()

		start := time.Now()
		serveStats(t, url, "--nats-nkey", seedFile)
		nkeyOpt, err := nats.NkeyOptionFromSeed(seedFile)
		if err != nil {
			t.Fatal(err)
		}
		waitServes(t, url, nkeyOpt)
		if c := statsConn(t, srv); c.AuthorizedUser != pub {
			t.Fatalf("stats connection authorized as %q, want the nkey %s", c.AuthorizedUser, pub)
		}
		t.Logf("serve stats with an nkey seed served after %v", time.Since(start).Round(time.Millisecond))

		// A seed the server does not know is refused, and the process says so.
		other, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		otherSeed, _ := other.Seed()
		otherFile := filepath.Join(dir, "other.nk")
		writeSecret(t, otherFile, otherSeed)
		start = time.Now()
		p := serveStats(t, url, "--nats-nkey", otherFile)
		code, out := waitExit(t, p, 20*time.Second)
		if code == 0 {
			t.Fatalf("serve stats with an unknown nkey exited 0:\n%s", out)
		}
		if !strings.Contains(out, "refused our credentials") {
			t.Fatalf("serve stats with an unknown nkey does not say the credentials were refused:\n%s", out)
		}
		if strings.Contains(out, string(otherSeed)) {
			t.Errorf("the seed appears in the output:\n%s", out)
		}
		t.Logf("unknown nkey: exit %d after %v: %s", code, time.Since(start).Round(time.Millisecond), lastLine(out))
	})

	t.Run("token in the URL", func(t *testing.T) {
		const token = "s3cret"
		srv := runSecureServer(t, func(o *server.Options) { o.Authorization = token })
		port := srv.Addr().(*net.TCPAddr).Port
		url := fmt.Sprintf("nats://%s@127.0.0.1:%d", token, port)

		// The server really requires the token.
		if nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port)); err == nil {
			nc.Close()
			t.Fatal("the server accepted a connection without the token")
		}
		start := time.Now()
		serveStats(t, url)
		waitServes(t, url)
		statsConn(t, srv)
		t.Logf("serve stats with a token in the URL served after %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("credentials file", func(t *testing.T) {
		op := newTestOperator(t)
		srv := runSecureServer(t, op.configure)
		creds := op.userCreds(t, "cachepool-stats")
		url := srv.ClientURL()

		if nc, err := nats.Connect(url); err == nil {
			nc.Close()
			t.Fatal("the server accepted a connection without credentials")
		}
		start := time.Now()
		serveStats(t, url, "--nats-creds", creds)
		waitServes(t, url, nats.UserCredentials(op.userCreds(t, "admin")))
		if c := statsConn(t, srv); c.Account != op.account {
			t.Fatalf("stats connection in account %q, want %s", c.Account, op.account)
		}
		t.Logf("serve stats with a credentials file served after %v", time.Since(start).Round(time.Millisecond))

		// A user of an account another operator signed is refused, and the
		// process says so.
		stranger := newTestOperator(t).userCreds(t, "stranger")
		start = time.Now()
		p := serveStats(t, url, "--nats-creds", stranger)
		code, out := waitExit(t, p, 20*time.Second)
		if code == 0 {
			t.Fatalf("serve stats with a foreign credentials file exited 0:\n%s", out)
		}
		if !strings.Contains(out, "refused our credentials") {
			t.Fatalf("serve stats with a foreign credentials file does not say the credentials were refused:\n%s", out)
		}
		t.Logf("foreign credentials file: exit %d after %v", code, time.Since(start).Round(time.Millisecond))
	})
}

// runSecureServer starts an embedded NATS server with JetStream on a random
// port, large enough a max_payload for the default image limit, and the
// security settings secure applies. It is shut down in t.Cleanup.
func runSecureServer(t *testing.T, secure func(*server.Options)) *server.Server {
	t.Helper()
	o := &server.Options{
		ServerName: "cachepool-security",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		MaxPayload: bus.PayloadFor(contracts.DefaultMaxImageBytes),
		NoSigs:     true,
		NoLog:      true,
	}
	secure(o)
	srv, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// serveStats starts `cachepool serve stats` against url with the extra flags.
func serveStats(t *testing.T, url string, flags ...string) *proc {
	t.Helper()
	args := append([]string{"serve", "stats", "--nats", url, "--data", t.TempDir()}, flags...)
	return startProc(t, args...)
}

// waitServes polls, through its own connection made with opts, until the
// stats micro service answers $SRV.PING.
func waitServes(t *testing.T, url string, opts ...nats.Option) {
	t.Helper()
	var admin *nats.Conn
	t.Cleanup(func() {
		if admin != nil {
			admin.Close()
		}
	})
	bustest.Eventually(t, 20*time.Second, func() error {
		if admin == nil {
			nc, err := nats.Connect(url, append([]nats.Option{nats.Name("security-admin")}, opts...)...)
			if err != nil {
				return fmt.Errorf("admin connection: %v", err)
			}
			admin = nc
		}
		msg, err := admin.Request("$SRV.PING."+contracts.ServiceStats, nil, 500*time.Millisecond)
		if err != nil {
			return fmt.Errorf("ping %s: %v", contracts.ServiceStats, err)
		}
		var ping struct {
			Name string `json:"name"`
			Type string `json:"type"`
		}
		if err := json.Unmarshal(msg.Data, &ping); err != nil {
			return err
		}
		if ping.Name != contracts.ServiceStats || ping.Type != "io.nats.micro.v1.ping_response" {
			return fmt.Errorf("ping answered by %q (%s)", ping.Name, ping.Type)
		}
		return nil
	})
}

// statsConn returns the server's view of the stats process's connection.
func statsConn(t *testing.T, srv *server.Server) *server.ConnInfo {
	t.Helper()
	cz, err := srv.Connz(&server.ConnzOptions{Username: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cz.Conns {
		if c.Name == "cachepool-stats" {
			return c
		}
	}
	t.Fatalf("no connection named cachepool-stats among %d", len(cz.Conns))
	return nil
}

// waitExit waits up to bound for p to exit and returns its exit code and output.
func waitExit(t *testing.T, p *proc, bound time.Duration) (int, string) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(bound):
		t.Fatalf("process still running after %v:\n%s", bound, p.output())
	}
	return p.cmd.ProcessState.ExitCode(), p.output()
}

func writeSecret(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate, as PEM files.
type testPKI struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	caKey := newECKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cachepool test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	pki := testPKI{ca: filepath.Join(dir, "ca.pem")}
	writePEM(t, pki.ca, "CERTIFICATE", caDER)

	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) (string, string) {
		key := newECKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile := filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+"-key.pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	pki.serverCert, pki.serverKey = issue(2, "nats-server", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	pki.clientCert, pki.clientKey = issue(3, "cachepool-stats", x509.ExtKeyUsageClientAuth, nil)
	return pki
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	writeSecret(t, path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

// testOperator is an operator with a system account and one application
// account (JetStream enabled) whose users sign in with credentials files.
type testOperator struct {
	claims     *jwt.OperatorClaims
	resolver   *server.MemAccResolver
	system     string
	account    string
	accountKey nkeys.KeyPair
	dir        string
}

func newTestOperator(t *testing.T) *testOperator {
	t.Helper()
	opKP, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	opPub, _ := opKP.PublicKey()
	o := &testOperator{resolver: &server.MemAccResolver{}, dir: t.TempDir()}

	account := func(name string, jetstream bool) (string, nkeys.KeyPair) {
		kp, err := nkeys.CreateAccount()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		if jetstream {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		enc, err := ac.Encode(opKP)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.resolver.Store(pub, enc); err != nil {
			t.Fatal(err)
		}
		return pub, kp
	}
	o.system, _ = account("SYS", false)
	o.account, o.accountKey = account("CACHEPOOL", true)

	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "cachepool-test"
	oc.SystemAccount = o.system
	enc, err := oc.Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	if o.claims, err = jwt.DecodeOperatorClaims(enc); err != nil {
		t.Fatal(err)
	}
	return o
}

// configure puts the server in operator mode with o's accounts.
func (o *testOperator) configure(opts *server.Options) {
	opts.TrustedOperators = []*jwt.OperatorClaims{o.claims}
	opts.AccountResolver = o.resolver
	opts.SystemAccount = o.system
}

// userCreds issues a user of the application account and writes its
// credentials file; it returns the file's path.
func (o *testOperator) userCreds(t *testing.T, name string) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	ujwt, err := uc.Encode(o.accountKey)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(o.dir, name+".creds")
	writeSecret(t, path, creds)
	return path
}
