package edge

import (
	"errors"
	"net/http"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/contracts"
	"github.com/gin-gonic/gin"
)

// errorBody is the failure envelope's "error" member.
type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// failure is the failure envelope. Content, when set, carries the state the
// failure is about (a rejected resize request), in addition to the pinned shape.
type failure struct {
	Success string    `json:"success"`
	Error   errorBody `json:"error"`
	Content any       `json:"content,omitempty"`
}

// httpStatus maps a wire code to the HTTP status of the answer. It is the
// only place where that mapping happens: a wire code that is a client or
// server error status is used as is, anything else is a 500.
func httpStatus(code int) int {
	if code >= 400 && code <= 599 {
		return code
	}
	return http.StatusInternalServerError
}

// wireError turns any error into a *contracts.Error: bus errors already are
// one, a body over its limit is 413, anything else gets bus.AsWire's code.
func wireError(err error) *contracts.Error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return contracts.Errorf(contracts.CodeTooLarge, "the request body is larger than %d bytes", mbe.Limit)
	}
	return bus.AsWire(err)
}

// fail answers the failure envelope for err, with HTTP status = error code.
func fail(c *gin.Context, err error) {
	failWith(c, err, nil)
}

// failWith is fail with a content member describing the failed operation.
func failWith(c *gin.Context, err error, content any) {
	we := wireError(err)
	status := httpStatus(we.Code)
	_ = c.Error(err)
	c.AbortWithStatusJSON(status, failure{
		Success: "false",
		Error:   errorBody{Code: status, Message: we.Message},
		Content: content,
	})
}

// badRequest answers 400 with msg, which names the field.
func badRequest(c *gin.Context, format string, args ...any) {
	fail(c, contracts.Errorf(contracts.CodeBadRequest, format, args...))
}

// ok answers 200 with {"success":"true"} plus fields.
func ok(c *gin.Context, fields gin.H) {
	okStatus(c, http.StatusOK, fields)
}

func okStatus(c *gin.Context, status int, fields gin.H) {
	if fields == nil {
		fields = gin.H{}
	}
	fields["success"] = "true"
	c.JSON(status, fields)
}

// content answers 200 with {"success":"true","content":v}, the manager API's shape.
func content(c *gin.Context, v any) {
	contentStatus(c, http.StatusOK, v)
}

func contentStatus(c *gin.Context, status int, v any) {
	c.JSON(status, gin.H{"success": "true", "content": v})
}
