package edge

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
)

// clearTimeout bounds clears, which touch every row, object and node.
const clearTimeout = 2 * time.Minute

// Pre-built header values of the hit path.
var (
	cacheHit  = []string{"hit"}
	cacheMiss = []string{"miss"}
)

// keyParam returns the key of a /api/key/*key or /api/image/*key route
// (Gin's catch-all value without its leading slash), so that an empty key
// or one with slashes reaches ValidateKey and gets a 400 naming the problem.
func keyParam(c *gin.Context) string {
	return strings.TrimPrefix(c.Param("key"), "/")
}

// validKey answers 400 and returns false when key breaks the key rules.
func validKey(c *gin.Context, key string) bool {
	if err := contracts.ValidateKey(key); err != nil {
		badRequest(c, "%v", err)
		return false
	}
	return true
}

// readImage returns the image stored under key. It asks the key's owner
// node first (one bus round trip on a hit, waiting at most cfg.NodeTimeout);
// on a miss (404) or any node error or timeout, and when no table is known,
// it loads the image through the key-image store, which fills the owner.
// The reply's body is the image, with contracts.HdrContentType and
// contracts.HdrVersion.
func (s *server) readImage(ctx context.Context, key string) (msg *nats.Msg, hit bool, err error) {
	if owner, _, oerr := s.table.Current().Owner(key); oerr == nil {
		msg, err = s.request(ctx, opNodeGet, &nats.Msg{Subject: s.nodeGetSubject(owner), Data: []byte(key)}, s.cfg.NodeTimeout)
		if err == nil {
			s.metrics.hits.Inc()
			return msg, true, nil
		}
	}
	s.metrics.misses.Inc()
	msg, err = s.request(ctx, opStoreLoad, &nats.Msg{Subject: contracts.StoreLoad, Data: []byte(key)}, 0)
	if err != nil {
		return nil, false, err
	}
	return msg, false, nil
}

// nodeGetSubject is contracts.NodeGet(id), cached.
func (s *server) nodeGetSubject(id contracts.NodeID) string {
	if v, ok := s.getSubjects.Load(id); ok {
		return v.(string)
	}
	subj := contracts.NodeGet(id)
	s.getSubjects.Store(id, subj)
	return subj
}

// image answers GET /api/image/<key>: the raw bytes with their Content-Type.
func (s *server) image(c *gin.Context) {
	key := keyParam(c)
	if !validKey(c, key) {
		return
	}
	msg, hit, err := s.readImage(c.Request.Context(), key)
	if err != nil {
		fail(c, err)
		return
	}
	h := c.Writer.Header()
	ct := msg.Header.Get(contracts.HdrContentType)
	if ct == "" {
		ct = http.DetectContentType(msg.Data)
	}
	h["Content-Type"] = []string{ct}
	h["Content-Length"] = []string{strconv.Itoa(len(msg.Data))}
	h["Cache-Control"] = noCache
	if hit {
		h["X-Cache"] = cacheHit
	} else {
		h["X-Cache"] = cacheMiss
	}
	c.Status(http.StatusOK)
	_, _ = c.Writer.Write(msg.Data)
}

var noCache = []string{"no-cache"}

// keyJSON answers GET|POST /api/key/<key>:
// {"success":"true","key":["<key>"],"content":"<base64>"}. The body is
// assembled by hand: base64 needs no JSON escaping and the image is copied once.
func (s *server) keyJSON(c *gin.Context) {
	key := keyParam(c)
	if !validKey(c, key) {
		return
	}
	msg, hit, err := s.readImage(c.Request.Context(), key)
	if err != nil {
		fail(c, err)
		return
	}
	qkey, _ := json.Marshal(key)
	const head, mid, tail = `{"success":"true","key":[`, `],"content":"`, `"}`
	n := len(head) + len(qkey) + len(mid) + base64.StdEncoding.EncodedLen(len(msg.Data)) + len(tail)
	buf := make([]byte, 0, n)
	buf = append(buf, head...)
	buf = append(buf, qkey...)
	buf = append(buf, mid...)
	buf = base64.StdEncoding.AppendEncode(buf, msg.Data)
	buf = append(buf, tail...)
	if hit {
		c.Header("X-Cache", "hit")
	} else {
		c.Header("X-Cache", "miss")
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", buf)
}

// upload answers POST /api/upload (multipart key + file). The body is read
// as a stream under a hard limit of MaxImageBytes plus multipart overhead;
// the file part must be at most MaxImageBytes (413), sniff as an image
// (415), and the key must follow the key rules (400). Only a fully
// validated upload is forwarded to the store, which answers once the blob,
// the row and the owner node hold the new image.
func (s *server) upload(c *gin.Context) {
	r := c.Request
	r.Body = http.MaxBytesReader(c.Writer, r.Body, s.cfg.MaxImageBytes+multipartHeadroom)
	mr, err := r.MultipartReader()
	if err != nil {
		badRequest(c, "the body must be multipart/form-data with the fields key and file: %v", err)
		return
	}
	var (
		key, file       []byte
		haveKey, haveFn bool
	)
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			s.multipartError(c, err)
			return
		}
		switch part.FormName() {
		case "key":
			if haveKey {
				badRequest(c, "key: the form field is given more than once")
				return
			}
			haveKey = true
			// A key longer than this is refused by ValidateKey anyway.
			if key, err = readPart(part, 4*contracts.MaxKeyBytes); err != nil {
				s.multipartError(c, err)
				return
			}
		case "file":
			if haveFn {
				badRequest(c, "file: the form field is given more than once")
				return
			}
			haveFn = true
			if file, err = readPart(part, s.cfg.MaxImageBytes); err != nil {
				s.multipartError(c, err)
				return
			}
			if int64(len(file)) > s.cfg.MaxImageBytes {
				fail(c, contracts.Errorf(contracts.CodeTooLarge, "file is larger than the limit of %d bytes", s.cfg.MaxImageBytes))
				return
			}
		default:
			if _, err := io.Copy(io.Discard, part); err != nil {
				s.multipartError(c, err)
				return
			}
		}
	}
	switch {
	case !haveKey:
		badRequest(c, "key: the form field is missing")
		return
	case !haveFn:
		badRequest(c, "file: the form field is missing")
		return
	}
	k := string(key)
	if !validKey(c, k) {
		return
	}
	if len(file) == 0 {
		badRequest(c, "file is empty")
		return
	}
	ct := http.DetectContentType(file)
	if !strings.HasPrefix(ct, "image/") {
		fail(c, contracts.Errorf(http.StatusUnsupportedMediaType, "file is not an image: its content looks like %s (accepted: PNG, JPEG, GIF, WebP, BMP, ICO)", ct))
		return
	}
	msg := &nats.Msg{Subject: contracts.StorePut, Header: nats.Header{}, Data: file}
	msg.Header.Set(contracts.HdrKey, k)
	msg.Header.Set(contracts.HdrContentType, ct)
	reply, err := s.request(c.Request.Context(), opStorePut, msg, 0)
	if err != nil {
		fail(c, err)
		return
	}
	var put contracts.StorePutReply
	if err := json.Unmarshal(reply.Data, &put); err != nil {
		fail(c, contracts.Errorf(contracts.CodeInternal, "bad reply from the store: %v", err))
		return
	}
	ok(c, gin.H{"key": []string{k}})
}

// readPart reads at most limit+1 bytes of part (so a caller sees that it
// is over the limit) and discards the rest.
func readPart(part *multipart.Part, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(part, limit+1))
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, part); err != nil {
		return nil, err
	}
	return b, nil
}

// multipartError answers 413 when the body went over its limit, else 400.
func (s *server) multipartError(c *gin.Context, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		fail(c, contracts.Errorf(contracts.CodeTooLarge, "the upload is larger than the limit of %d bytes per image", s.cfg.MaxImageBytes))
		return
	}
	badRequest(c, "malformed multipart body: %v", err)
}

// listKeys answers GET|POST /api/list_keys: {"success":"true","keys":[…]}.
func (s *server) listKeys(c *gin.Context) {
	r, err := call[contracts.ListKeysReply](c.Request.Context(), s, opStoreList, contracts.StoreList, nil, 0)
	if err != nil {
		fail(c, err)
		return
	}
	if r.Keys == nil {
		r.Keys = []string{}
	}
	ok(c, gin.H{"keys": r.Keys})
}

// deleteAll answers POST /api/delete_all: every row, object and cached
// entry is deleted; the counts are reported.
func (s *server) deleteAll(c *gin.Context) {
	r, err := call[contracts.ClearAllReply](c.Request.Context(), s, opStoreClearAll, contracts.StoreClearAll, nil, clearTimeout)
	if err != nil {
		fail(c, err)
		return
	}
	ok(c, gin.H{"rows": r.Rows, "objects": r.Objects, "cached_items": r.CachedItems})
}

// numNodes answers POST /api/getNumNodes from the watched table.
func (s *server) numNodes(c *gin.Context) {
	t := s.table.Current()
	if t == nil {
		fail(c, contracts.Errorf(contracts.CodeUnavailable, "no partition table is known yet"))
		return
	}
	ok(c, gin.H{"numNodes": len(t.Nodes)})
}

// rate answers POST /api/getRate?rate=miss|hit with the last complete
// minute's rate; value is null when that minute saw no gets.
func (s *server) rate(c *gin.Context) {
	rate, found := formValue(c, "rate")
	if !found {
		badRequest(c, `rate: the parameter is missing ("miss" or "hit")`)
		return
	}
	req := contracts.RateRequest{Rate: rate}
	if err := req.Validate(); err != nil {
		badRequest(c, "%v", err)
		return
	}
	r, err := call[contracts.RateReply](c.Request.Context(), s, opStats, contracts.StatsRate, req, 0)
	if err != nil {
		fail(c, err)
		return
	}
	ok(c, gin.H{"rate": rate, "value": r.Value})
}

// formValue reads a parameter from the query string, else from a form body.
func formValue(c *gin.Context, name string) (string, bool) {
	if v, found := c.GetQuery(name); found {
		return v, true
	}
	return c.GetPostForm(name)
}
