package server

import (
	"github.com/caucus/caucus/internal/mvcc"
	"github.com/caucus/caucus/internal/nativeapi"
)

// NativeConfig returns the configuration of a native-protocol server (internal/nativeapi) that
// dispatches to the same service implementations as Handler, with the same request size limit,
// so both protocols on the client port behave identically.
func (s *Server) NativeConfig() nativeapi.ServerConfig {
	maxRequest := s.cfg.Limits.MaxRequestBytes
	if maxRequest <= 0 {
		// The state machine applies its default then; a frame limit must exist regardless.
		maxRequest = mvcc.DefaultLimits().MaxRequestBytes
	}
	return nativeapi.ServerConfig{
		Handlers:        s.NativeHandlers(),
		MaxRequestBytes: maxRequest,
		Logger:          s.cfg.Logger,
	}
}

// NativeHandlers returns the API services for the native protocol.
func (s *Server) NativeHandlers() nativeapi.Handlers {
	return nativeapi.Handlers{
		KV:          &kvService{s},
		Lease:       &leaseService{s},
		Cluster:     &clusterService{s},
		Maintenance: &maintenanceService{s},
		Events:      &eventsService{s: s},
		Consumers:   &consumersService{s},
	}
}
