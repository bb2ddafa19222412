package ctl

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestWatchUsage: watch refuses command lines that select nothing or contradict themselves,
// before contacting anyone. (internal/embed runs it against real members.)
func TestWatchUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"watch"}, "give a KEY, --prefix or a --topic"},
		{[]string{"watch", "a", "b", "c"}, "expected [KEY [END]]"},
		{[]string{"watch", "a", "b", "--prefix"}, "exclude each other"},
		{[]string{"watch", "a", "--rev", "-1"}, "negative"},
	} {
		var out, errb bytes.Buffer
		err := RunIO(context.Background(), append([]string{"--endpoints", "127.0.0.1:1"}, tc.args...), nil, &out, &errb)
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
}
