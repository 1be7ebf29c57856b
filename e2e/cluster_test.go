package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/system"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/nats-io/nats.go/jetstream"
)

// clusterSystem is the whole system across processes: three nats-server
// processes and one `cachepool serve` process per service instance, each
// with its own NATS user from deploy/nats/auth.conf.
type clusterSystem struct {
	nats  *natsCluster
	edge  *pool // the edge's HTTP API (only the HTTP helpers of pool are used)
	admin jetstream.JetStream
	procs map[string]*proc
}

const (
	clusterNodes   = 3 // standby cache node processes
	clusterInitial = 2 // pool size at the start
	// managers (active + standby), stores, stats, scalers (active +
	// standby), edge, nodes: one connection each.
	clusterServices = 2 + 2 + 1 + 2 + 1 + clusterNodes
)

// postgresSchemaDSN returns the machine's PostgreSQL with a fresh schema
// (dropped at the end) as search_path, or skips when it is unreachable.
func postgresSchemaDSN(t *testing.T) string {
	t.Helper()
	base := os.Getenv("CACHEPOOL_TEST_POSTGRES")
	if base == "" {
		base = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	db, err := sql.Open("pgx", base)
	if err == nil {
		err = db.Ping()
	}
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("PostgreSQL unreachable at %s (set CI to make this a failure): %v", base, err)
		}
		t.Fatalf("PostgreSQL unreachable at %s: %v", base, err)
	}
	schema := "e2e_cluster_" + randomHex(6)
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := db.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		_ = db.Close()
	})
	return base + "&search_path=" + schema
}

// startClusterSystem starts the NATS cluster, an S3-protocol server in this
// process, and every service as its own process against PostgreSQL, then
// waits until the pool has clusterInitial nodes and the edge is healthy.
func startClusterSystem(t *testing.T) *clusterSystem {
	t.Helper()
	dsn := postgresSchemaDSN(t)
	s3 := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(s3.Close)
	// The standard AWS credential chain of the store processes reads these.
	t.Setenv("AWS_ACCESS_KEY_ID", "cachepool-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "cachepool-test-secret")
	blobURL := "s3://images/cachepool?region=us-east-1&path_style=true&create_bucket=true&endpoint=" + s3.URL

	c := startNATSCluster(t)
	cs := &clusterSystem{nats: c, procs: map[string]*proc{}}
	adminNC := connectUser(t, c, "admin", 0)
	cs.admin, _ = jetstream.New(adminNC)

	common := []string{"--replicas", "3", "--heartbeat", "1s", "--report-interval", "1s",
		"--stats-bucket", "5s", "--scaler-tick", "5s", "--log-level", "info"}
	serve := func(name, service, user string, args ...string) {
		all := append([]string{"serve", service, "--nats", c.urls(user), "--data", t.TempDir()}, args...)
		cs.procs[name] = startProc(t, append(all, common...)...)
	}
	// The manager first: it owns (creates) the stream and the buckets the
	// others only read, so their users need no right to create them.
	managerArgs := []string{"--provisioner", "standby", "--nodes", strconv.Itoa(clusterInitial), "--max-nodes", strconv.Itoa(clusterNodes)}
	serve("manager", "manager", "manager", managerArgs...)
	// No deadline: each JetStream call then has the library's own 5s
	// timeout, so one lost API request cannot hang a whole wait.
	ctx := context.Background()
	bustest.Eventually(t, time.Minute, func() error {
		if err := cs.exited(); err != nil {
			t.Fatal(err)
		}
		_, err := cs.admin.KeyValue(ctx, contracts.BucketPool)
		return err
	})
	for i := 1; i <= clusterNodes; i++ {
		serve(fmt.Sprintf("node-%d", i), "cachenode", "node", "--standby", "--id", fmt.Sprintf("sb-%d", i))
	}
	for i := 1; i <= 2; i++ {
		serve(fmt.Sprintf("store-%d", i), "store", "store", "--database", dsn, "--blob-store", blobURL)
	}
	serve("stats", "stats", "stats")
	serve("scaler", "scaler", "scaler")
	// A standby of each: it contends for the lease and must stay idle.
	serve("manager-standby", "manager", "manager", managerArgs...)
	serve("scaler-standby", "scaler", "scaler")
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	serve("edge", "edge", "edge", "--http", httpAddr)

	cs.edge = &pool{info: system.Info{HTTPURL: "http://" + httpAddr},
		http: &http.Client{Timeout: 90 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	waitTable(t, ctx, cs.admin, func(tab contracts.PartitionTable) bool {
		if err := cs.exited(); err != nil {
			t.Fatal(err)
		}
		return len(tab.Nodes) == clusterInitial && len(tab.Previous) == 0
	})
	bustest.Eventually(t, time.Minute, func() error {
		if err := cs.exited(); err != nil {
			t.Fatal(err)
		}
		resp, err := cs.edge.http.Get(cs.edge.info.HTTPURL + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("edge healthz %d", resp.StatusCode)
		}
		return nil
	})
	bustest.Eventually(t, time.Minute, func() error {
		if n := cs.clientCount(); n != clusterServices {
			return fmt.Errorf("%d cachepool connections, want %d", n, clusterServices)
		}
		return nil
	})
	return cs
}

// exited reports a service process that has stopped, with its output.
func (cs *clusterSystem) exited() error {
	for name, p := range cs.procs {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %s", name, p.log.String())
		default:
		}
	}
	return nil
}

// clientCount is the number of cachepool-* connections over the running
// servers (one per service process).
func (cs *clusterSystem) clientCount() int {
	n := 0
	for i := range 3 {
		p := cs.nats.procs[i]
		if p == nil {
			continue
		}
		select {
		case <-p.done:
			continue
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/connz?limit=1024", cs.nats.monitor[i]))
		if err != nil {
			continue
		}
		var connz struct {
			Connections []struct {
				Name string `json:"name"`
			} `json:"connections"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&connz)
		resp.Body.Close()
		for _, c := range connz.Connections {
			if strings.HasPrefix(c.Name, "cachepool-") {
				n++
			}
		}
	}
	return n
}

// readAll checks every key reads back its exact image through the edge.
func (cs *clusterSystem) readAll(t *testing.T, images map[string][]byte) {
	t.Helper()
	for k, want := range images {
		code, got, err := cs.edge.image(k)
		if err != nil || code != http.StatusOK || !bytes.Equal(got, want) {
			t.Fatalf("GET %s: %d, %d bytes, %v; want the %d bytes uploaded", k, code, len(got), err, len(want))
		}
	}
}

func (cs *clusterSystem) resize(t *testing.T, change string, want int) {
	t.Helper()
	code, env := cs.edge.jsonDo(t, http.MethodPost, "/api/manager/poolsize/manual?wait=60s", map[string]string{"change": change})
	if code != http.StatusOK {
		_, reqs := cs.edge.jsonDo(t, http.MethodGet, "/api/manager/poolsize/requests", nil)
		t.Fatalf("resize %s: %d %+v\nrecent requests: %s", change, code, env, reqs.Content)
	}
	waitTable(t, context.Background(), cs.admin, func(tab contracts.PartitionTable) bool {
		return len(tab.Nodes) == want && len(tab.Previous) == 0
	})
}

// TestClusterWholeSystem runs the scenario of one machine across processes
// on a 3-server NATS cluster, PostgreSQL and S3: store and read images
// through the edge, resize +1 and -1 with reads in between, let the scaler
// grow the pool on a burst of misses, clear the cache and read everything
// again from the store.
func TestClusterWholeSystem(t *testing.T) {
	if testing.Short() {
		t.Skip("whole-system cluster test: 3 nats-server and 11 cachepool processes")
	}
	start := time.Now()
	cs := startClusterSystem(t)
	t.Logf("cluster system up in %v", time.Since(start).Round(time.Millisecond))
	// Of each active/standby pair, exactly one process holds the lease.
	for _, role := range []string{"manager", "scaler"} {
		var h bus.LeaseHolder
		bustest.Eventually(t, 30*time.Second, func() error {
			var err error
			h, err = bus.ReadLease(context.Background(), cs.admin, role)
			return err
		})
		if pid := h.PID; pid != cs.procs[role].cmd.Process.Pid && pid != cs.procs[role+"-standby"].cmd.Process.Pid {
			t.Fatalf("the %s lease is held by pid %d, none of the two %s processes", role, pid, role)
		}
	}

	images := map[string][]byte{}
	for i := range 60 {
		k := fmt.Sprintf("img-%d", i)
		images[k] = pngImage(i, 8+i%5)
		if code, env := cs.edge.upload(t, k, images[k]); code != http.StatusOK {
			t.Fatalf("upload %s: %d %+v", k, code, env)
		}
	}
	cs.readAll(t, images)
	code, env := cs.edge.jsonDo(t, http.MethodPost, "/api/list_keys", nil)
	if code != http.StatusOK || len(env.Keys) != len(images) {
		t.Fatalf("list_keys: %d, %d keys, want %d", code, len(env.Keys), len(images))
	}

	cs.resize(t, "increase", clusterInitial+1)
	cs.readAll(t, images)
	cs.resize(t, "decrease", clusterInitial)
	cs.readAll(t, images)

	// Automatic mode: a burst of misses makes the scaler grow the pool
	// through the same queue; back to manual, the operator shrinks it again.
	params := map[string]float64{"max_miss_rate_threshold": 0.5, "min_miss_rate_threshold": 0.05, "expand_ratio": 1.5, "shrink_ratio": 0.5}
	if code, env := cs.edge.jsonDo(t, http.MethodPost, "/api/manager/poolsize/automatic", params); code != http.StatusOK {
		t.Fatalf("automatic mode: %d %+v", code, env)
	}
	scaleStart := time.Now()
	burst := cs.edge.startLoad(0, 10, 4)
	waitTable(t, context.Background(), cs.admin, func(tab contracts.PartitionTable) bool {
		return len(tab.Nodes) == clusterInitial+1 && len(tab.Previous) == 0
	})
	burst.halt()
	t.Logf("the scaler grew the pool %d → %d %v after a burst of misses began (5 s buckets and ticks)",
		clusterInitial, clusterInitial+1, time.Since(scaleStart).Round(time.Millisecond))
	if code, env := cs.edge.jsonDo(t, http.MethodPost, "/api/manager/mode", map[string]string{"mode": "manual"}); code != http.StatusOK {
		t.Fatalf("manual mode: %d %+v", code, env)
	}
	cs.resize(t, "decrease", clusterInitial)
	cs.readAll(t, images)

	if code, env := cs.edge.jsonDo(t, http.MethodDelete, "/api/manager/cache/clear", nil); code != http.StatusOK {
		t.Fatalf("clear cache: %d %+v", code, env)
	}
	cs.readAll(t, images) // every key a miss, served by a store from S3 and PostgreSQL
	if v := cs.nats.violations(); len(v) > 0 {
		t.Fatalf("the services hit permission violations:\n%s", strings.Join(v, "\n"))
	}
	t.Logf("60 images stored and read, +1/-1 resize, automatic growth, cache cleared and read back; %v in all, no permission violation",
		time.Since(start).Round(time.Millisecond))
}

// loadResult is what the steady load saw.
type loadResult struct {
	mu          sync.Mutex
	getOK       int
	getFailed   int
	putOK       []int // indexes of answered (200) uploads
	putFailed   int
	firstErrors []string
	lastFailure time.Time
}

func (r *loadResult) fail(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.firstErrors) < 5 {
		r.firstErrors = append(r.firstErrors, msg)
	}
	r.lastFailure = time.Now()
}

// TestClusterNATSServerKill kills one nats-server (the JetStream meta
// leader) with SIGKILL during steady GET/PUT load through the edge and two
// queued resizes, restarts it, and reports: the GET success ratio, that
// every answered upload is readable, that each resize was applied exactly
// once, and how long the components took to reconnect.
func TestClusterNATSServerKill(t *testing.T) {
	if testing.Short() {
		t.Skip("whole-system cluster fault test")
	}
	cs := startClusterSystem(t)
	images := map[string][]byte{}
	keys := make([]string, 0, 40)
	for i := range 40 {
		k := fmt.Sprintf("hot-%d", i)
		images[k], keys = pngImage(i, 8), append(keys, k)
		if code, env := cs.edge.upload(t, k, images[k]); code != http.StatusOK {
			t.Fatalf("upload %s: %d %+v", k, code, env)
		}
	}
	cs.readAll(t, images)

	// Steady load: 3 GET workers on known keys, 1 PUT worker on new keys.
	res := &loadResult{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := keys[rng.IntN(len(keys))]
				code, got, err := cs.edge.image(k)
				if err == nil && code == http.StatusOK && bytes.Equal(got, images[k]) {
					res.mu.Lock()
					res.getOK++
					res.mu.Unlock()
					continue
				}
				res.mu.Lock()
				res.getFailed++
				res.mu.Unlock()
				res.fail(fmt.Sprintf("GET %s: %d %v %.120s", k, code, err, got))
			}
		}()
	}
	var putN atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			n := int(putN.Add(1))
			if err := cs.edge.uploadErr(fmt.Sprintf("load-%d", n), pngImage(100000+n, 8)); err != nil {
				res.mu.Lock()
				res.putFailed++
				res.mu.Unlock()
				res.fail(err.Error())
				continue
			}
			res.mu.Lock()
			res.putOK = append(res.putOK, n)
			res.mu.Unlock()
		}
	}()

	ctx := context.Background() // JetStream calls time out on their own (5s)
	time.Sleep(2 * time.Second) // steady load before the fault, on purpose

	// Which server leads the meta group: that one dies.
	j, err := cs.nats.jsz(0)
	if err != nil || j.Meta == nil {
		t.Fatalf("jsz: %v", err)
	}
	victim := int(j.Meta.Leader[len(j.Meta.Leader)-1] - '1')
	before := cs.clientCount()

	enqueue := func(id string, change int) {
		body, _ := json.Marshal(contracts.ResizeCommand{RequestID: id, Change: change,
			Source: contracts.SourceManual, RequestedAt: time.Now().UTC()})
		// A client retries an unacknowledged publish with the same id; the
		// stream's duplicate window makes the retry a no-op.
		bustest.Eventually(t, time.Minute, func() error {
			pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
			defer pcancel()
			_, err := cs.admin.Publish(pctx, contracts.PoolResizeCommand, body, jetstream.WithMsgID(id))
			return err
		})
	}
	grow, shrink := "fault-grow-"+randomHex(4), "fault-shrink-"+randomHex(4)
	enqueue(grow, +1)
	killedAt := time.Now()
	cs.nats.kill(victim)
	enqueue(shrink, -1) // while the server is down
	shrinkAcked := time.Since(killedAt)

	bustest.Eventually(t, time.Minute, func() error {
		if n := cs.clientCount(); n < before {
			return fmt.Errorf("%d of %d components connected", n, before)
		}
		return nil
	})
	reconnected := time.Since(killedAt)
	time.Sleep(3 * time.Second) // the server stays down under load, on purpose
	cs.nats.start(victim)
	restartedAt := time.Now()
	cs.nats.waitReady(time.Minute)
	clusterBack := time.Since(restartedAt)
	time.Sleep(3 * time.Second) // load after the recovery, on purpose
	close(stop)
	wg.Wait()

	// Both resizes ended applied, each once: the pool is back at its size.
	kv, err := cs.admin.KeyValue(ctx, contracts.BucketRequests)
	if err != nil {
		t.Fatal(err)
	}
	seqs := map[uint64]string{}
	for _, id := range []string{grow, shrink} {
		var st contracts.ResizeRequestState
		bustest.Eventually(t, time.Minute, func() error {
			e, err := kv.Get(ctx, id)
			if err != nil {
				return fmt.Errorf("request %s: %v", id, err)
			}
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				return err
			}
			if st.Status != contracts.StateApplied {
				return fmt.Errorf("request %s is %s (%s)", id, st.Status, st.Reason)
			}
			return nil
		})
		if prev, dup := seqs[st.Sequence]; dup {
			t.Fatalf("requests %s and %s share stream sequence %d", prev, id, st.Sequence)
		}
		seqs[st.Sequence] = id
		applied := 0
		for _, h := range st.History {
			if h.State == contracts.StateApplied {
				applied++
			}
		}
		if applied != 1 {
			t.Fatalf("request %s applied %d times: %+v", id, applied, st.History)
		}
	}
	var tab contracts.PartitionTable
	waitTable(t, ctx, cs.admin, func(cur contracts.PartitionTable) bool { tab = cur; return len(cur.Previous) == 0 })
	if len(tab.Nodes) != clusterInitial {
		t.Fatalf("pool has %d nodes after +1 and -1, want %d", len(tab.Nodes), clusterInitial)
	}
	stream, err := cs.admin.Stream(ctx, contracts.StreamResize)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("the resize stream holds %d commands, want 2 (no duplicate from a retried publish)", info.State.Msgs)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("the resize stream is not an R3 stream with 2 current followers: replicas %d, cluster %+v", info.Config.Replicas, info.Cluster)
	}

	// Every answered upload reads back (after the load, so no race with it).
	res.mu.Lock()
	answered := slices.Clone(res.putOK)
	res.mu.Unlock()
	for _, n := range answered {
		k := fmt.Sprintf("load-%d", n)
		code, got, err := cs.edge.image(k)
		if err != nil || code != http.StatusOK || !bytes.Equal(got, pngImage(100000+n, 8)) {
			t.Fatalf("answered upload %s is not readable: %d %v", k, code, err)
		}
	}

	gets := res.getOK + res.getFailed
	ratio := float64(res.getOK) / float64(max(gets, 1))
	fullService := time.Duration(0)
	if !res.lastFailure.IsZero() {
		fullService = res.lastFailure.Sub(killedAt)
	}
	t.Logf("killed nats-%d (meta leader) under load: GET %d/%d ok (%.3f %%), PUT %d answered + %d failed, "+
		"all %d answered uploads readable; resizes %s (+1) and %s (-1) applied once each (seq %v; the -1 enqueued and acknowledged %v after the kill), pool back at %d; "+
		"components reconnected %v after the kill; restarted server back in the cluster in %v; last failed request %v after the kill; first errors: %q",
		victim+1, res.getOK, gets, 100*ratio, len(answered), res.putFailed, len(answered), grow, shrink,
		slices.Sorted(maps.Keys(seqs)), shrinkAcked.Round(time.Millisecond), len(tab.Nodes), reconnected.Round(time.Millisecond),
		clusterBack.Round(time.Millisecond), fullService.Round(time.Millisecond), res.firstErrors)
	if v := cs.nats.violations(); len(v) > 0 {
		t.Fatalf("the services hit permission violations:\n%s", strings.Join(v, "\n"))
	}
	if gets < 100 {
		t.Fatalf("only %d GETs ran: the load did not run", gets)
	}
	if ratio < 0.999 {
		t.Errorf("GET success %.3f %% (%d failed of %d), want at least 99.9 %%", 100*ratio, res.getFailed, gets)
	}
}
