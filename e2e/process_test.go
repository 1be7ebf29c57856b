package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// cachepoolBinary builds cmd/cachepool once per test run.
func cachepoolBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cachepool-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "cachepool")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/cachepool/cachepool/cmd/cachepool")
		cmd.Stderr = os.Stderr
		buildErr = cmd.Run()
	})
	if buildErr != nil {
		t.Fatalf("building cachepool: %v", buildErr)
	}
	return binPath
}

// proc is a cachepool process started by a test.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(cachepoolBinary(t), args...)
	p := &proc{cmd: cmd, done: make(chan struct{}), log: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = &syncWriter{w: p.log}, &syncWriter{w: p.log}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() || os.Getenv("CACHEPOOL_TEST_PROC_LOG") == "1" {
			t.Logf("output of %v:\n%s", args, p.output())
		}
	})
	return p
}

// output returns what the process printed so far.
func (p *proc) output() string {
	w := p.cmd.Stdout.(*syncWriter)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.String()
}

func (p *proc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

// TestManagerKill9DuringResizesLosesAndDoublesNothing runs the manager as
// its own process and kills it with SIGKILL at random points while a queue
// of resizes runs, restarting it each time. At the end every command is
// terminal exactly once, the pool size is the serial replay of the applied
// ones, and every cached key sits on its owner.
func TestManagerKill9DuringResizesLosesAndDoublesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("process chaos test")
	}
	srv := bustest.RunServer(t)
	url := srv.ClientURL()
	nc := bustest.Connect(t, srv)
	data := t.TempDir()
	common := []string{"--nats", url, "--heartbeat", "300ms", "--report-interval", "1s", "--log-level", "warn"}

	const maxNodes = 4
	for i := 1; i <= maxNodes; i++ {
		startProc(t, append([]string{"serve", "cachenode", "--standby", "--id", fmt.Sprintf("sb-%d", i)}, common...)...)
	}
	startProc(t, append([]string{"serve", "store", "--data", data}, common...)...)
	managerArgs := append([]string{"serve", "manager", "--provisioner", "standby", "--max-nodes", strconv.Itoa(maxNodes), "--nodes", "1"}, common...)
	mgr := startProc(t, managerArgs...)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	js, _ := jetstream.New(nc)
	waitTable(t, ctx, js, func(tab contracts.PartitionTable) bool { return len(tab.Nodes) == 1 })

	// Some cached keys, through the store (which fills their owners).
	const keys = 200
	for i := 0; i < keys; i++ {
		msg := &nats.Msg{Subject: contracts.StorePut, Data: pngImage(i, 4), Header: nats.Header{}}
		msg.Header.Set(contracts.HdrKey, fmt.Sprintf("k-%d", i))
		msg.Header.Set(contracts.HdrContentType, "image/png")
		if _, err := bus.RequestMsg(ctx, nc, msg); err != nil {
			t.Fatalf("store put: %v", err)
		}
	}

	// A queue of ±1 commands straight into the stream.
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	const cmds = 100
	ids := queueResizes(t, ctx, js, rng, "chaos", cmds)
	kv, err := js.KeyValue(ctx, contracts.BucketRequests)
	if err != nil {
		t.Fatal(err)
	}
	terminal := func() int { return countTerminal(ctx, kv, ids) }
	// Kill -9 at random points while the queue runs, up to eight times.
	killedMidQueue := 0
	for round := 0; round < 8 && terminal() < cmds; round++ {
		// Once the manager serves, kill it at a random point of its work.
		bustest.Eventually(t, time.Minute, func() error {
			_, err := nc.Request("$SRV.PING."+contracts.ServiceManager, nil, 200*time.Millisecond)
			return err
		})
		time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond) // a random point, on purpose
		mgr.kill9()
		done := terminal()
		if done < cmds {
			killedMidQueue++
		}
		t.Logf("round %d: manager killed with %d/%d commands terminal", round, done, cmds)
		mgr = startProc(t, managerArgs...)
	}
	if killedMidQueue < 3 {
		t.Fatalf("only %d kills landed while the queue ran; the test proves little", killedMidQueue)
	}
	states := terminalRequests(t, ctx, kv, ids)
	size := serialReplay(t, states, 1, maxNodes)
	var tab contracts.PartitionTable
	waitTable(t, ctx, js, func(cur contracts.PartitionTable) bool { tab = cur; return len(cur.Previous) == 0 })
	if len(tab.Nodes) != size {
		t.Fatalf("pool has %d nodes, the accepted commands imply %d", len(tab.Nodes), size)
	}
	// Every cached key sits on its owner.
	for i := 0; i < keys; i++ {
		key := fmt.Sprintf("k-%d", i)
		owner, _, _ := tab.Owner(key)
		reply, err := bus.RequestMsg(ctx, nc, &nats.Msg{Subject: contracts.NodeGet(owner), Data: []byte(key)})
		if err != nil {
			t.Fatalf("%s is not on its owner %s: %v", key, owner, err)
		}
		if !bytes.Equal(reply.Data, pngImage(i, 4)) {
			t.Fatalf("%s on %s has the wrong image", key, owner)
		}
	}
	t.Logf("%d commands, final size %d, every key on its owner", cmds, size)
}

// queueResizes publishes n random ±1 commands (two increases for each
// decrease) straight into the resize stream and returns their request ids.
func queueResizes(t *testing.T, ctx context.Context, js jetstream.JetStream, rng *rand.Rand, prefix string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		change := 1
		if rng.IntN(3) == 0 {
			change = -1
		}
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
		c := contracts.ResizeCommand{RequestID: ids[i], Change: change, Source: contracts.SourceManual, RequestedAt: time.Now().UTC()}
		b, _ := json.Marshal(c)
		if _, err := js.Publish(ctx, contracts.PoolResizeCommand, b, jetstream.WithMsgID(ids[i])); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// countTerminal counts the requests of ids that are terminal now.
func countTerminal(ctx context.Context, kv jetstream.KeyValue, ids []string) int {
	n := 0
	for _, id := range ids {
		if e, err := kv.Get(ctx, id); err == nil {
			var s contracts.ResizeRequestState
			if json.Unmarshal(e.Value(), &s) == nil && contracts.Terminal(s.Status) {
				n++
			}
		}
	}
	return n
}

// terminalRequests waits until every request of ids is terminal in the
// requests bucket and returns their states.
func terminalRequests(t *testing.T, ctx context.Context, kv jetstream.KeyValue, ids []string) map[string]contracts.ResizeRequestState {
	t.Helper()
	states := map[string]contracts.ResizeRequestState{}
	bustest.Eventually(t, 3*time.Minute, func() error {
		for _, id := range ids {
			e, err := kv.Get(ctx, id)
			if err != nil {
				return fmt.Errorf("request %s: %v", id, err)
			}
			var s contracts.ResizeRequestState
			if err := json.Unmarshal(e.Value(), &s); err != nil {
				return err
			}
			if !contracts.Terminal(s.Status) {
				return fmt.Errorf("request %s still %s", id, s.Status)
			}
			states[id] = s
		}
		return nil
	})
	return states
}

// serialReplay replays ±1 requests in queue (stream sequence) order from
// a pool of size start, checks that exactly the in-bound ones were applied,
// each once and none failed, and returns the size they imply.
func serialReplay(t *testing.T, states map[string]contracts.ResizeRequestState, start, maxNodes int) int {
	t.Helper()
	bySeq := map[uint64]contracts.ResizeRequestState{}
	var maxSeq uint64
	for _, s := range states {
		if s.Status == contracts.StateFailed {
			t.Errorf("request %s failed: %s", s.RequestID, s.Reason)
		}
		if _, dup := bySeq[s.Sequence]; dup {
			t.Fatalf("two requests share sequence %d", s.Sequence)
		}
		bySeq[s.Sequence] = s
		maxSeq = max(maxSeq, s.Sequence)
		applies := 0
		for _, h := range s.History {
			if h.State == contracts.StateApplied {
				applies++
			}
		}
		if s.Status == contracts.StateApplied && applies != 1 {
			t.Errorf("request %s applied %d times in its history", s.RequestID, applies)
		}
	}
	size := start
	for seq := uint64(1); seq <= maxSeq; seq++ {
		s, ok := bySeq[seq]
		if !ok {
			continue
		}
		want := size + s.Command.Change
		ok = want >= 1 && want <= maxNodes
		if ok != (s.Status == contracts.StateApplied) {
			t.Fatalf("seq %d (%s): size %d change %+d ended %s: %s", seq, s.RequestID, size, s.Command.Change, s.Status, s.Reason)
		}
		if ok {
			size = want
		}
	}
	return size
}

func waitTable(t *testing.T, ctx context.Context, js jetstream.JetStream, ok func(contracts.PartitionTable) bool) {
	t.Helper()
	bustest.Eventually(t, 2*time.Minute, func() error {
		kv, err := js.KeyValue(ctx, contracts.BucketPool)
		if err != nil {
			return err
		}
		e, err := kv.Get(ctx, contracts.KeyTable)
		if err != nil {
			return err
		}
		var tab contracts.PartitionTable
		if err := json.Unmarshal(e.Value(), &tab); err != nil {
			return err
		}
		if !ok(tab) {
			return fmt.Errorf("table epoch %d (%d nodes) not as expected yet", tab.Epoch, len(tab.Nodes))
		}
		return nil
	})
}
