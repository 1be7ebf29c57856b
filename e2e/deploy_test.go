package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"
)

// deployDir is the repository's deploy/ folder, relative to this package.
const deployDir = "../deploy"

// natsUsers are the users of deploy/nats/auth.conf; each one's password
// comes from CACHEPOOL_NATS_<USER>_PASSWORD in the servers' environment.
var natsUsers = []string{"edge", "store", "node", "manager", "stats", "scaler", "admin", "sys"}

func passwordEnv(user string) string {
	return "CACHEPOOL_NATS_" + strings.ToUpper(user) + "_PASSWORD"
}

var (
	natsBuildOnce sync.Once
	natsBinPath   string
	natsBuildErr  error
)

// natsServerBinary builds the real nats-server from the module in go.mod
// (github.com/nats-io/nats-server/v2), once per test run, to one fixed
// path in the temp dir (written through a rename, so parallel runs never
// see half a binary and runs do not pile up copies).
func natsServerBinary(t testing.TB) string {
	t.Helper()
	natsBuildOnce.Do(func() {
		natsBinPath = filepath.Join(os.TempDir(), "cachepool-e2e-nats-server")
		tmp := fmt.Sprintf("%s.%d", natsBinPath, os.Getpid())
		cmd := exec.Command("go", "build", "-o", tmp, "github.com/nats-io/nats-server/v2")
		cmd.Stderr = os.Stderr
		if natsBuildErr = cmd.Run(); natsBuildErr == nil {
			natsBuildErr = os.Rename(tmp, natsBinPath)
		}
	})
	if natsBuildErr != nil {
		t.Fatalf("building nats-server: %v", natsBuildErr)
	}
	return natsBinPath
}

// natsCluster is three real nats-server processes running the configs of
// deploy/nats/local with free ports, temp store dirs and random passwords.
type natsCluster struct {
	t         testing.TB
	bin       string
	env       []string
	passwords map[string]string
	confs     [3]string
	client    [3]int
	monitor   [3]int
	procs     [3]*natsProc
}

type natsProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncWriter
}

// localPorts are the literal ports of deploy/nats/local: client, route and
// monitoring port of each server.
var localPorts = [3][3]int{{4222, 6222, 8222}, {4223, 6223, 8223}, {4224, 6224, 8224}}

// startNATSCluster renders deploy/nats/local/nats-{1,2,3}.conf into a temp
// dir (every literal port replaced by a free one, the store dir by a temp
// one), starts the three servers and waits for a JetStream meta leader
// that all three agree on. Servers are killed in t.Cleanup.
func startNATSCluster(t testing.TB) *natsCluster {
	t.Helper()
	c := &natsCluster{t: t, bin: natsServerBinary(t), passwords: map[string]string{}}
	dir := t.TempDir()
	auth, err := os.ReadFile(filepath.Join(deployDir, "nats", "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), auth, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "local"), 0o755); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 9)
	repl := map[string]string{}
	for i := range 3 {
		for j := range 3 {
			repl[strconv.Itoa(localPorts[i][j])] = strconv.Itoa(ports[3*i+j])
		}
		c.client[i], c.monitor[i] = ports[3*i], ports[3*i+2]
	}
	portRE := regexp.MustCompile(`\b(4222|4223|4224|6222|6223|6224|8222|8223|8224)\b`)
	storeRE := regexp.MustCompile(`store_dir: "[^"]*"`)
	for i := range 3 {
		raw, err := os.ReadFile(filepath.Join(deployDir, "nats", "local", fmt.Sprintf("nats-%d.conf", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		conf := portRE.ReplaceAllStringFunc(string(raw), func(p string) string { return repl[p] })
		store := filepath.Join(dir, fmt.Sprintf("js-%d", i+1))
		conf = storeRE.ReplaceAllString(conf, fmt.Sprintf("store_dir: %q", store))
		c.confs[i] = filepath.Join(dir, "local", fmt.Sprintf("nats-%d.conf", i+1))
		if err := os.WriteFile(c.confs[i], []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.env = os.Environ()
	for _, u := range natsUsers {
		c.passwords[u] = randomHex(12)
		c.env = append(c.env, passwordEnv(u)+"="+c.passwords[u])
	}
	for i := range 3 {
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range 3 {
			c.kill(i)
		}
		if t.Failed() {
			for i, p := range c.procs {
				if p != nil {
					t.Logf("nats-%d log (tail):\n%s", i+1, tail(p.log.text(), 40000))
				}
			}
		}
	})
	c.waitReady(60 * time.Second)
	return c
}

// start runs server i (0-based) on its config; its log is kept in memory.
func (c *natsCluster) start(i int) {
	c.t.Helper()
	cmd := exec.Command(c.bin, "-c", c.confs[i])
	cmd.Env = c.env
	p := &natsProc{cmd: cmd, done: make(chan struct{}), log: &syncWriter{w: &bytes.Buffer{}}}
	if c.procs[i] != nil { // keep the log of earlier runs of this server
		p.log = c.procs[i].log
	}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start nats-%d: %v", i+1, err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	c.procs[i] = p
}

// kill SIGKILLs server i and waits for it to exit (no-op if not running).
func (c *natsCluster) kill(i int) {
	p := c.procs[i]
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// url is server i's client URL for user, password included.
func (c *natsCluster) url(user string, i int) string {
	return fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", user, c.passwords[user], c.client[i])
}

// urls lists every server for user, comma-separated, as nats.Connect and
// `--nats` accept it: a client fails over to the next server.
func (c *natsCluster) urls(user string) string {
	out := make([]string, 3)
	for i := range 3 {
		out[i] = c.url(user, i)
	}
	return strings.Join(out, ",")
}

// jsz is the part of a server's /jsz answer the tests read.
type jsz struct {
	Config struct {
		SyncAlways bool `json:"sync_always"`
	} `json:"config"`
	Meta *struct {
		Leader      string `json:"leader"`
		ClusterSize int    `json:"cluster_size"`
	} `json:"meta_cluster"`
}

func (c *natsCluster) jsz(i int) (jsz, error) {
	var out jsz
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", c.monitor[i]))
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out, err
}

// waitReady waits until every running server reports healthy JetStream
// and the same meta leader in a meta group of 3.
func (c *natsCluster) waitReady(timeout time.Duration) {
	c.t.Helper()
	bustest.Eventually(c.t, timeout, func() error {
		leader := ""
		for i := range 3 {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", c.monitor[i]))
			if err != nil {
				return fmt.Errorf("nats-%d: %v", i+1, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("nats-%d: healthz %d", i+1, resp.StatusCode)
			}
			j, err := c.jsz(i)
			if err != nil {
				return fmt.Errorf("nats-%d: jsz: %v", i+1, err)
			}
			if j.Meta == nil || j.Meta.Leader == "" || j.Meta.ClusterSize != 3 {
				return fmt.Errorf("nats-%d: no meta leader of a 3-server group yet: %+v", i+1, j.Meta)
			}
			if leader != "" && leader != j.Meta.Leader {
				return fmt.Errorf("servers disagree on the meta leader: %s, %s", leader, j.Meta.Leader)
			}
			leader = j.Meta.Leader
		}
		return nil
	})
}

// violations returns the permission violations the servers logged.
func (c *natsCluster) violations() []string {
	var out []string
	for i, p := range c.procs {
		if p == nil {
			continue
		}
		for _, line := range strings.Split(p.log.text(), "\n") {
			if strings.Contains(line, "Violation") {
				out = append(out, fmt.Sprintf("nats-%d: %s", i+1, line))
			}
		}
	}
	return out
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// redact hides the passwords of a comma-separated URL list.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(p); err == nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// permCase is one publish or subscribe a user tries.
type permCase struct {
	user, subject string
	subscribe     bool // a subscription instead of a publish
	allowed       bool
}

// TestDeployNATSPermissions starts the 3-server cluster of deploy/nats and
// checks what each service user may do: the allowed publishes reach an
// admin subscriber, the refused ones come back as a permissions violation
// from the server (and reach nobody).
func TestDeployNATSPermissions(t *testing.T) {
	c := startNATSCluster(t)
	for i := range 3 {
		j, err := c.jsz(i)
		if err != nil {
			t.Fatal(err)
		}
		if !j.Config.SyncAlways {
			t.Errorf("nats-%d: JetStream sync_always is off, want the resize stream fsynced", i+1)
		}
	}
	admin := connectUser(t, c, "admin", 0)
	if got, need := admin.MaxPayload(), int64(contracts.DefaultMaxImageBytes+16<<10); got < need {
		t.Errorf("max_payload %d, want at least %d (8 MiB images plus headers)", got, need)
	}
	if err := bus.CheckMaxPayload(admin, contracts.DefaultMaxImageBytes); err != nil {
		t.Error(err)
	}

	cases := []permCase{
		{"edge", "cachepool.v1.node.req.put.node-1", false, false},
		{"edge", "cachepool.v1.node.req.put_batch.node-1", false, false},
		{"edge", "cachepool.v1.node.req.clear.node-1", false, false},
		{"edge", "cachepool.v1.node.req.handoff.node-1", false, false},
		{"edge", "cachepool.v1.pool.cmd.resize", false, false},
		{"edge", "$KV.cachepool_pool.table", false, false},
		{"edge", "$JS.API.STREAM.DELETE.CACHEPOOL_RESIZE", false, false},
		{"edge", "cachepool.v1.node.req.get.node-1", false, true},
		{"edge", "cachepool.v1.store.req.put", false, true},
		{"edge", "cachepool.v1.pool.req.resize", false, true},
		{"edge", "cachepool.v1.node.req.>", true, false},
		{"edge", "cachepool.v1.pool.evt.table", true, true},
		{"node", "cachepool.v1.pool.cmd.resize", false, false},
		{"node", "cachepool.v1.pool.req.resize", false, false},
		{"node", "cachepool.v1.store.req.put", false, false},
		{"node", "$KV.cachepool_pool.table", false, false},
		{"node", "cachepool.v1.node.evt.heartbeat.node-1", false, true},
		{"node", "cachepool.v1.stats.evt.report.node-1", false, true},
		{"node", "cachepool.v1.node.req.put_batch.node-2", false, true},
		{"node", "cachepool.v1.store.req.>", true, false},
		{"store", "cachepool.v1.pool.cmd.resize", false, false},
		{"store", "cachepool.v1.node.req.handoff.node-1", false, false},
		{"store", "cachepool.v1.node.req.put.node-1", false, true},
		{"stats", "cachepool.v1.pool.cmd.resize", false, false},
		{"stats", "cachepool.v1.node.req.get.node-1", false, false},
		{"scaler", "cachepool.v1.pool.req.resize", false, false},
		{"scaler", "cachepool.v1.pool.req.set_mode", false, false},
		{"scaler", "cachepool.v1.node.req.put.node-1", false, false},
		{"scaler", "$KV.cachepool_pool.state", false, false},
		{"scaler", "cachepool.v1.stats.req.rate", false, true},
		{"manager", "cachepool.v1.node.req.handoff.node-1", false, true},
		{"manager", "cachepool.v1.store.req.put", false, false},
	}
	conns := map[string]*nats.Conn{}
	errs := map[string]chan error{}
	for i, u := range []string{"edge", "node", "store", "stats", "scaler", "manager"} {
		ch := make(chan error, 64)
		errs[u] = ch
		conns[u] = connectUser(t, c, u, i%3, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case ch <- err:
			default:
			}
		}))
	}
	for _, tc := range cases {
		verb := "publish to"
		if tc.subscribe {
			verb = "subscribe to"
		}
		name := fmt.Sprintf("%s may %s %s = %v", tc.user, verb, tc.subject, tc.allowed)
		t.Run(name, func(t *testing.T) {
			nc := conns[tc.user]
			drain(errs[tc.user])
			if tc.subscribe {
				checkSubscribe(t, admin, nc, errs[tc.user], tc)
			} else {
				checkPublish(t, admin, nc, errs[tc.user], tc)
			}
		})
	}

	// The scaler enqueues resizes through JetStream: the stream acknowledges.
	js, _ := jetstream.New(admin)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: contracts.StreamResize,
		Subjects: []string{contracts.PoolResizeCommand}, Storage: jetstream.FileStorage, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	sjs, _ := jetstream.New(conns["scaler"])
	ack, err := sjs.Publish(ctx, contracts.PoolResizeCommand, []byte(`{"request_id":"perm-1","change":1,"source":"scaler"}`), jetstream.WithMsgID("perm-1"))
	if err != nil {
		t.Fatalf("scaler could not enqueue a resize: %v", err)
	}
	if ack.Stream != contracts.StreamResize {
		t.Fatalf("resize acknowledged by stream %q", ack.Stream)
	}
	// The node's attempt is refused by the server and never lands in the stream.
	njs, _ := jetstream.New(conns["node"])
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	_, nodeErr := njs.Publish(short, contracts.PoolResizeCommand, []byte(`{"request_id":"perm-2","change":1}`), jetstream.WithMsgID("perm-2"))
	cancelShort()
	if nodeErr == nil {
		t.Fatal("a node enqueued a resize")
	}
	st, err := js.Stream(ctx, contracts.StreamResize)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("resize stream holds %d commands, want only the scaler's", info.State.Msgs)
	}
	t.Logf("%d permission cases checked on a 3-server cluster; node's resize refused (%v)", len(cases), nodeErr)
}

// checkPublish publishes (or requests) as tc.user while admin listens.
func checkPublish(t *testing.T, admin, nc *nats.Conn, errs chan error, tc permCase) {
	got := make(chan *nats.Msg, 1)
	sub, err := admin.Subscribe(tc.subject, func(m *nats.Msg) {
		if m.Reply != "" {
			_ = m.Respond([]byte("ok"))
		}
		select {
		case got <- m:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := admin.Flush(); err != nil {
		t.Fatal(err)
	}
	if tc.allowed {
		// A request proves the whole round trip: publish, and the reply
		// coming back to the user's inbox.
		// The admin's interest reaches the other servers of the cluster
		// asynchronously: "no responders" is retried until it has.
		var msg *nats.Msg
		for deadline := time.Now().Add(5 * time.Second); ; {
			msg, err = nc.Request(tc.subject, []byte("x"), 5*time.Second)
			if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("allowed request failed: %v (async: %v)", err, pending(errs))
		}
		if string(msg.Data) != "ok" {
			t.Fatalf("reply %q", msg.Data)
		}
		return
	}
	if err := nc.Publish(tc.subject, []byte("x")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	_ = nc.Flush()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), tc.subject) {
			t.Fatalf("got %v, want a permissions violation for %s", err, tc.subject)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no permissions violation reported")
	}
	select {
	case m := <-got:
		t.Fatalf("refused publish was delivered: %s", m.Subject)
	default:
	}
}

// checkSubscribe subscribes as tc.user and has admin publish a message.
func checkSubscribe(t *testing.T, admin, nc *nats.Conn, errs chan error, tc permCase) {
	sub, err := nc.SubscribeSync(tc.subject)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = nc.Flush()
	pub := strings.ReplaceAll(tc.subject, ">", "x")
	if err := admin.Publish(pub, []byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = admin.Flush()
	if tc.allowed {
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("allowed subscription got nothing: %v (async: %v)", err, pending(errs))
		}
		return
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("got %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no permissions violation reported")
	}
	if m, err := sub.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("refused subscription received %s", m.Subject)
	}
}

func connectUser(t testing.TB, c *natsCluster, user string, server int, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(c.url(user, server), append([]nats.Option{nats.Name("test-" + user)}, opts...)...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func drain(ch chan error) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func pending(ch chan error) []error {
	var out []error
	for {
		select {
		case err := <-ch:
			out = append(out, err)
		default:
			return out
		}
	}
}

// TestDeployWrongCredentialsRefused: a wrong password is refused by every
// server, bus.Connect says so at once instead of retrying forever, and
// `cachepool serve edge` with it exits with a clear message.
func TestDeployWrongCredentialsRefused(t *testing.T) {
	c := startNATSCluster(t)
	bad := fmt.Sprintf("nats://edge:wrong@127.0.0.1:%d", c.client[1])

	if _, err := nats.Connect(bad); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("plain connect with a wrong password: %v, want %v", err, nats.ErrAuthorization)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	nc, err := bus.Connect(ctx, bad, "cachepool-edge", nil)
	if err == nil {
		nc.Close()
		t.Fatal("bus.Connect accepted a wrong password")
	}
	if !errors.Is(err, nats.ErrAuthorization) || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("bus.Connect: %v, want an authorization error that names the credentials", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("bus.Connect waited for its context (%v) instead of failing fast", time.Since(start))
	}
	busTook := time.Since(start)

	// Every URL wrong (the password is the same on every server).
	badAll := strings.ReplaceAll(c.urls("edge"), c.passwords["edge"], "wrong")
	procStart := time.Now()
	p := startProc(t, "serve", "edge", "--nats", badAll, "--http", "127.0.0.1:0")
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("cachepool serve edge with a wrong password still running after 30s:\n%s", p.log.String())
	}
	serveTook := time.Since(procStart)
	out := p.log.String()
	if p.cmd.ProcessState.ExitCode() == 0 {
		t.Fatalf("serve edge exited 0 with a wrong password:\n%s", out)
	}
	if !strings.Contains(out, "refused our credentials") || !strings.Contains(strings.ToLower(out), "authorization") {
		t.Fatalf("serve edge's message does not say the credentials were refused:\n%s", out)
	}
	if strings.Contains(out, "wrong@") {
		t.Errorf("the password appears in the output:\n%s", out)
	}
	// A right password but a user without the permission to watch the
	// table (here the node user running the edge) must fail too, not hang.
	procStart = time.Now()
	p2 := startProc(t, "serve", "edge", "--nats", c.urls("node"), "--http", "127.0.0.1:0")
	select {
	case <-p2.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("cachepool serve edge as user node still running after 60s:\n%s", p2.log.String())
	}
	permTook := time.Since(procStart)
	if p2.cmd.ProcessState.ExitCode() == 0 {
		t.Fatalf("serve edge as the node user exited 0:\n%s", p2.log.String())
	}
	if out2 := p2.log.String(); !strings.Contains(out2, "refused a permission") || !strings.Contains(out2, "KV_cachepool_pool") {
		t.Fatalf("serve edge as the node user does not name the refused permission:\n%s", out2)
	}
	t.Logf("wrong password: bus.Connect failed in %v; serve edge exited %d after %v: %s", busTook.Round(time.Millisecond),
		p.cmd.ProcessState.ExitCode(), serveTook.Round(time.Millisecond), lastLine(out))
	t.Logf("edge run as the node user exited %d after %v: %s", p2.cmd.ProcessState.ExitCode(),
		permTook.Round(time.Millisecond), lastLine(p2.log.String()))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// text is everything written so far.
func (s *syncWriter) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// authUsers lists the users deploy/nats/auth.conf defines.
func authUsers(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(deployDir, "nats", "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*\{?\s*user:\s*(\w+)`).FindAllStringSubmatch(string(raw), -1) {
		users[m[1]] = true
	}
	for _, u := range natsUsers {
		if !users[u] {
			t.Fatalf("auth.conf has no user %q (found %v)", u, users)
		}
	}
	return users
}

// serviceUser is the NATS user each `cachepool serve <service>` runs as.
var serviceUser = map[string]string{
	"edge": "edge", "store": "store", "cachenode": "node", "manager": "manager", "stats": "stats", "scaler": "scaler",
}

// checkNATSURLs checks a --nats value: three servers, each with the user
// the service must run as.
func checkNATSURLs(t *testing.T, where, service, urls string) {
	t.Helper()
	want, ok := serviceUser[service]
	if !ok {
		t.Errorf("%s: unknown service %q", where, service)
		return
	}
	parts := strings.Split(urls, ",")
	if len(parts) != 3 {
		t.Errorf("%s: --nats lists %d servers, want the 3 of the cluster: %s", where, len(parts), urls)
	}
	for _, p := range parts {
		m := regexp.MustCompile(`^nats://([^:@]+):[^@]+@[^,]+:4222$`).FindStringSubmatch(p)
		if m == nil {
			t.Errorf("%s: %q is not nats://user:password@host:4222", where, p)
			continue
		}
		if m[1] != want {
			t.Errorf("%s: %s runs as NATS user %q, want %q", where, service, m[1], want)
		}
	}
}

// natsConfigTest runs `nats-server -t` (parse and check, then exit) on conf.
func natsConfigTest(t *testing.T, conf string, env ...string) {
	t.Helper()
	cmd := exec.Command(natsServerBinary(t), "-t", "-c", conf)
	cmd.Env = append(os.Environ(), env...)
	for _, u := range natsUsers {
		cmd.Env = append(cmd.Env, passwordEnv(u)+"="+randomHex(8))
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nats-server -t -c %s: %v\n%s", conf, err, out)
	}
}

// TestDeployNATSConfigsValid checks the configs that cannot run here as a
// cluster (hosts/ and the Kubernetes ConfigMap) with the real server's
// config test, using route certificates from deploy/nats/tls/make-certs.sh,
// and that the ConfigMap's auth.conf is deploy/nats/auth.conf.
func TestDeployNATSConfigsValid(t *testing.T) {
	authUsers(t)
	auth, err := os.ReadFile(filepath.Join(deployDir, "nats", "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	tls := t.TempDir()
	if out, err := exec.Command("sh", filepath.Join(deployDir, "nats", "tls", "make-certs.sh"), tls).CombinedOutput(); err != nil {
		t.Fatalf("make-certs.sh: %v\n%s", err, out)
	}
	render := func(conf string) string {
		conf = strings.ReplaceAll(conf, "/etc/nats/tls", tls)
		return regexp.MustCompile(`store_dir: "[^"]*"`).ReplaceAllString(conf, fmt.Sprintf("store_dir: %q", t.TempDir()))
	}

	// hosts/nats.conf includes ../auth.conf.
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(deployDir, "nats", "hosts", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "hosts"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "auth.conf"), string(auth))
	writeFile(t, filepath.Join(dir, "hosts", "nats.conf"), render(string(raw)))
	natsConfigTest(t, filepath.Join(dir, "hosts", "nats.conf"), "NATS_SERVER_NAME=nats-1")

	// The Kubernetes ConfigMap: nats.conf next to auth.conf.
	var cm struct {
		Kind string            `yaml:"kind"`
		Data map[string]string `yaml:"data"`
	}
	for _, doc := range yamlDocs(t, filepath.Join(deployDir, "k8s", "nats.yaml")) {
		if doc.kind() == "ConfigMap" {
			if err := doc.node.Decode(&cm); err != nil {
				t.Fatal(err)
			}
		}
	}
	if cm.Data["auth.conf"] != string(auth) {
		t.Fatal("k8s/nats.yaml's auth.conf differs from deploy/nats/auth.conf: run deploy/k8s/sync-auth.sh")
	}
	kdir := t.TempDir()
	writeFile(t, filepath.Join(kdir, "auth.conf"), cm.Data["auth.conf"])
	conf := strings.ReplaceAll(render(cm.Data["nats.conf"]), "/var/run/nats", kdir)
	writeFile(t, filepath.Join(kdir, "nats.conf"), conf)
	natsConfigTest(t, filepath.Join(kdir, "nats.conf"), "SERVER_NAME=nats-0")

	// Every config keeps the settings the system relies on.
	for name, c := range map[string]string{"local/nats-1.conf": "", "hosts/nats.conf": string(raw), "k8s nats.conf": cm.Data["nats.conf"]} {
		if c == "" {
			b, err := os.ReadFile(filepath.Join(deployDir, "nats", name))
			if err != nil {
				t.Fatal(err)
			}
			c = string(b)
		}
		for _, want := range []string{"max_payload: 9MB", "sync_interval: always", "name: cachepool", "include "} {
			if !strings.Contains(c, want) {
				t.Errorf("%s lacks %q", name, want)
			}
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// yamlDoc is one document of a (multi-document) YAML file.
type yamlDoc struct{ node *yaml.Node }

func (d yamlDoc) kind() string {
	var h struct {
		Kind string `yaml:"kind"`
	}
	_ = d.node.Decode(&h)
	return h.Kind
}

func yamlDocs(t *testing.T, path string) []yamlDoc {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []yamlDoc
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return docs
			}
			t.Fatalf("%s: document %d: %v", path, len(docs)+1, err)
		}
		docs = append(docs, yamlDoc{&n})
	}
}

// TestDeployComposeValid parses deploy/compose/docker-compose.yml (no
// Docker engine here) and checks what would make it fail at run time: every
// cachepool service runs as its own NATS user on all three servers with
// --replicas 3, the servers get every password auth.conf needs, every
// ${VAR} is in .env.example, and depends_on names existing services.
func TestDeployComposeValid(t *testing.T) {
	users := authUsers(t)
	path := filepath.Join(deployDir, "compose", "docker-compose.yml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			DependsOn   map[string]any    `yaml:"depends_on"`
			Deploy      struct {
				Replicas int `yaml:"replicas"`
			} `yaml:"deploy"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	instances := map[string]int{}
	ids := map[string]bool{}
	natsServers := 0
	for name, s := range compose.Services {
		for dep := range s.DependsOn {
			if _, ok := compose.Services[dep]; !ok {
				t.Errorf("%s depends on unknown service %s", name, dep)
			}
		}
		if slices.Contains(s.Command, "/etc/nats/hosts/nats.conf") {
			natsServers++
			for _, u := range natsUsers {
				if _, ok := s.Environment[passwordEnv(u)]; !ok {
					t.Errorf("NATS server %s lacks %s", name, passwordEnv(u))
				}
			}
			if s.Environment["NATS_SERVER_NAME"] != name {
				t.Errorf("NATS server %s is named %q", name, s.Environment["NATS_SERVER_NAME"])
			}
			continue
		}
		if len(s.Command) < 2 || s.Command[0] != "serve" {
			continue
		}
		service := s.Command[1]
		n := max(s.Deploy.Replicas, 1)
		instances[service] += n
		checkNATSURLs(t, "compose "+name, service, s.Environment["CACHEPOOL_NATS"])
		u := serviceUser[service]
		if !users[u] || !strings.Contains(s.Environment["CACHEPOOL_NATS"], "${"+passwordEnv(u)+"}") {
			t.Errorf("compose %s: the NATS URL does not use ${%s}", name, passwordEnv(u))
		}
		if s.Environment["CACHEPOOL_REPLICAS"] != "3" {
			t.Errorf("compose %s: CACHEPOOL_REPLICAS=%q, want 3", name, s.Environment["CACHEPOOL_REPLICAS"])
		}
		if service == "cachenode" {
			i := slices.Index(s.Command, "--id")
			if !slices.Contains(s.Command, "--standby") || i < 0 || i+1 >= len(s.Command) || ids[s.Command[i+1]] {
				t.Errorf("compose %s: a cache node needs --standby and its own --id: %v", name, s.Command)
			} else {
				ids[s.Command[i+1]] = true
			}
		}
	}
	if natsServers != 3 {
		t.Errorf("%d NATS servers, want 3", natsServers)
	}
	for service, want := range map[string]int{"manager": 2, "scaler": 2, "stats": 1, "store": 2, "edge": 2, "cachenode": 3} {
		if instances[service] != want {
			t.Errorf("%d %s instances, want %d", instances[service], service, want)
		}
	}
	env, err := os.ReadFile(filepath.Join(deployDir, "compose", ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\$\{(\w+)`).FindAllStringSubmatch(string(raw), -1) {
		if !regexp.MustCompile(`(?m)^` + m[1] + `=`).Match(env) {
			t.Errorf("compose uses ${%s}, .env.example does not set it", m[1])
		}
	}
	dockerfile, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dockerfile), "CGO_ENABLED=0 go build") || !strings.Contains(string(dockerfile), "./cmd/cachepool") {
		t.Error("deploy/Dockerfile does not build ./cmd/cachepool statically")
	}
}

// TestDeployDockerfileBuild runs the Dockerfile's build step (a static,
// pure-Go build of cmd/cachepool) outside Docker.
func TestDeployDockerfileBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/cachepool")
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(t.TempDir(), "cachepool"), "./cmd/cachepool")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build ./cmd/cachepool: %v\n%s", err, out)
	}
}

// TestDeploySystemdUnitsValid runs `systemd-analyze verify` on every unit
// of deploy/systemd (with the binaries pointed at the ones built here), and
// checks each service's env file runs it as its own NATS user.
func TestDeploySystemdUnitsValid(t *testing.T) {
	users := authUsers(t)
	units, err := filepath.Glob(filepath.Join(deployDir, "systemd", "*.service"))
	if err != nil || len(units) < 7 {
		t.Fatalf("units: %v %v", units, err)
	}
	analyze, lookErr := exec.LookPath("systemd-analyze")
	dir := t.TempDir()
	for _, u := range units {
		raw, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		unit := string(raw)
		for _, section := range []string{"[Unit]", "[Service]", "[Install]"} {
			if !strings.Contains(unit, section) {
				t.Errorf("%s lacks %s", filepath.Base(u), section)
			}
		}
		exec := regexp.MustCompile(`(?m)^ExecStart=(\S+)(.*)$`).FindStringSubmatch(unit)
		if exec == nil {
			t.Errorf("%s has no ExecStart", filepath.Base(u))
			continue
		}
		base := filepath.Base(u)
		if strings.HasPrefix(base, "cachepool-") {
			service := strings.Fields(exec[2])[1]
			envFile := ""
			for _, m := range regexp.MustCompile(`(?m)^EnvironmentFile=/etc/cachepool/(\S+)$`).FindAllStringSubmatch(unit, -1) {
				if m[1] != "common.env" {
					envFile = m[1]
				}
			}
			env, err := os.ReadFile(filepath.Join(deployDir, "systemd", "env", envFile))
			if err != nil {
				t.Errorf("%s: env file %q: %v", base, envFile, err)
				continue
			}
			m := regexp.MustCompile(`(?m)^CACHEPOOL_NATS=(.*)$`).FindStringSubmatch(string(env))
			if m == nil {
				t.Errorf("%s sets no CACHEPOOL_NATS", envFile)
				continue
			}
			checkNATSURLs(t, "systemd "+base, service, m[1])
			if !users[serviceUser[service]] {
				t.Errorf("%s: user %q not in auth.conf", base, serviceUser[service])
			}
		}
		bin := cachepoolBinary(t)
		if strings.Contains(exec[1], "nats-server") {
			bin = natsServerBinary(t)
		}
		writeFile(t, filepath.Join(dir, base), strings.Replace(unit, "ExecStart="+exec[1], "ExecStart="+bin, 1))
	}
	common, err := os.ReadFile(filepath.Join(deployDir, "systemd", "env", "common.env"))
	if err != nil || !strings.Contains(string(common), "CACHEPOOL_REPLICAS=3") {
		t.Errorf("env/common.env must set CACHEPOOL_REPLICAS=3 (%v)", err)
	}
	if lookErr != nil {
		t.Logf("systemd-analyze not installed: units checked for structure only")
		return
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		n := e.Name()
		if strings.HasSuffix(n, "@.service") { // verify a template through an instance
			n = strings.Replace(n, "@.service", "@1.service", 1)
		}
		names = append(names, filepath.Join(dir, n))
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, names...)...)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	t.Logf("systemd-analyze verify: %d units clean", len(names))
}

// TestDeployK8sManifestsValid parses every manifest of deploy/k8s (no
// cluster here) and checks what the deployment depends on.
func TestDeployK8sManifestsValid(t *testing.T) {
	users := authUsers(t)
	files, err := filepath.Glob(filepath.Join(deployDir, "k8s", "*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("manifests: %v %v", files, err)
	}
	type container struct {
		Args []string `yaml:"args"`
		Env  []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom struct {
				SecretKeyRef struct{ Name, Key string } `yaml:"secretKeyRef"`
				FieldRef     struct {
					FieldPath string `yaml:"fieldPath"`
				} `yaml:"fieldRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
	}
	type object struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name      string `yaml:"name"`
			Namespace string `yaml:"namespace"`
		} `yaml:"metadata"`
		Data       map[string]string `yaml:"data"`
		StringData map[string]string `yaml:"stringData"`
		Spec       struct {
			Replicas *int `yaml:"replicas"`
			Template struct {
				Spec struct {
					Containers []container `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	replicas := map[string]int{}
	secrets := map[string]map[string]string{}
	var common map[string]string
	kinds := 0
	for _, f := range files {
		for i, doc := range yamlDocs(t, f) {
			var o object
			if err := doc.node.Decode(&o); err != nil {
				t.Fatalf("%s #%d: %v", f, i+1, err)
			}
			where := fmt.Sprintf("%s #%d (%s %s)", filepath.Base(f), i+1, o.Kind, o.Metadata.Name)
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s: apiVersion, kind and metadata.name are required", where)
			}
			if o.Kind != "Namespace" && o.Metadata.Namespace != "cachepool" {
				t.Errorf("%s: namespace %q, want cachepool", where, o.Metadata.Namespace)
			}
			kinds++
			switch o.Kind {
			case "Secret":
				secrets[o.Metadata.Name] = o.StringData
			case "ConfigMap":
				if o.Metadata.Name == "cachepool-common" {
					common = o.Data
				}
			case "Deployment", "StatefulSet":
				if o.Spec.Replicas == nil || len(o.Spec.Template.Spec.Containers) == 0 {
					t.Errorf("%s: no replicas or containers", where)
					continue
				}
				c := o.Spec.Template.Spec.Containers[0]
				if len(c.Args) < 2 || c.Args[0] != "serve" {
					continue // the NATS servers
				}
				service := c.Args[1]
				replicas[service] += *o.Spec.Replicas
				env := map[string]string{}
				for _, e := range c.Env {
					env[e.Name] = e.Value
					if e.Name == "NATS_PASSWORD" {
						u := serviceUser[service]
						if e.ValueFrom.SecretKeyRef.Key != passwordEnv(u) || !users[u] {
							t.Errorf("%s: NATS_PASSWORD from %q, want %s", where, e.ValueFrom.SecretKeyRef.Key, passwordEnv(u))
						}
					}
					if e.Name == "POD_NAME" && e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
						t.Errorf("%s: POD_NAME is not the pod's name", where)
					}
				}
				checkNATSURLs(t, where, service, strings.ReplaceAll(env["CACHEPOOL_NATS"], "$(NATS_PASSWORD)", "pw"))
				if service == "cachenode" {
					if o.Kind != "StatefulSet" || !slices.Contains(c.Args, "--standby") || !slices.Contains(c.Args, "$(POD_NAME)") {
						t.Errorf("%s: cache nodes must be a StatefulSet in standby with --id $(POD_NAME): %v", where, c.Args)
					}
				}
			}
		}
	}
	for service, want := range map[string]int{"manager": 2, "scaler": 2, "stats": 1, "store": 2, "edge": 2, "cachenode": 3} {
		if replicas[service] != want {
			t.Errorf("%s: %d replicas, want %d", service, replicas[service], want)
		}
	}
	if common["CACHEPOOL_REPLICAS"] != "3" {
		t.Errorf("cachepool-common CACHEPOOL_REPLICAS=%q, want 3", common["CACHEPOOL_REPLICAS"])
	}
	for _, u := range natsUsers {
		if _, ok := secrets["cachepool-nats-users"][passwordEnv(u)]; !ok {
			t.Errorf("secret cachepool-nats-users lacks %s", passwordEnv(u))
		}
	}
	t.Logf("%d Kubernetes objects in %d files", kinds, len(files))
}
