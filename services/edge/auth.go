package edge

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"

	"github.com/cachepool/cachepool/contracts"
	"github.com/gin-gonic/gin"
)

// requireAdmin lets a request through when no admin token is configured or
// when it carries "Authorization: Bearer <token>"; otherwise it answers 401.
// The comparison is constant-time over SHA-256 digests, so neither the
// token's content nor its length leaks through timing.
func (s *server) requireAdmin(c *gin.Context) {
	if s.adminToken == nil {
		return
	}
	h := c.GetHeader("Authorization")
	scheme, token, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		c.Header("WWW-Authenticate", `Bearer realm="cachepool"`)
		fail(c, contracts.Errorf(contracts.CodeUnauthorized, "this endpoint needs the admin token: send Authorization: Bearer <token>"))
		return
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	want := sha256.Sum256(s.adminToken)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		c.Header("WWW-Authenticate", `Bearer realm="cachepool", error="invalid_token"`)
		fail(c, contracts.Errorf(contracts.CodeUnauthorized, "the admin token is wrong"))
		return
	}
}
