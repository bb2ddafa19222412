package relay_test

import (
	"log/slog"

	"github.com/caucus/caucus/internal/embed/embedtest"
)

func quiet() *slog.Logger { return embedtest.Quiet() }
