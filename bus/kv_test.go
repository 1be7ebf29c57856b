package bus

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestIsConflictMatchesReplicatedWrongLastSequence(t *testing.T) {
	for _, code := range []jetstream.ErrorCode{jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant} {
		err := fmt.Errorf("write: %w", &jetstream.APIError{Code: 400, ErrorCode: code, Description: "wrong last sequence"})
		if !IsConflict(err) {
			t.Errorf("code %d not a conflict", code)
		}
	}
	if IsConflict(&jetstream.APIError{Code: 500, ErrorCode: 10001}) {
		t.Error("an unrelated API error counted as a conflict")
	}
}
