package nativeapi

import (
	"bytes"
	"os"
	"testing"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/nativeapi/internal/apigen"
)

// TestGeneratedFilesUpToDate fails when the API changed (or the generator did) and `make
// generate` was not run: the method table, the stubs and the registry must match the API.
func TestGeneratedFilesUpToDate(t *testing.T) {
	files, err := apigen.GenerateDir(".", caucusv1.File_caucus_v1_caucus_proto)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		have, err := os.ReadFile(name)
		if err != nil {
			t.Errorf("reading %s: %v", name, err)
			continue
		}
		if !bytes.Equal(have, want) {
			t.Errorf("%s is out of date: run make generate", name)
		}
	}
}

// TestMethodNumbersArePinned: these numbers are on the wire; the registry may grow but never
// change them.
func TestMethodNumbersArePinned(t *testing.T) {
	for m, want := range map[Method]uint16{
		MethodKVRange: 1, MethodKVPut: 2, MethodKVDeleteRange: 3, MethodKVTxn: 4, MethodKVCompact: 5,
		MethodLeaseGrant: 16, MethodLeaseRevoke: 17, MethodLeaseKeepAlive: 18, MethodLeaseTimeToLive: 19, MethodLeaseLeases: 20,
		MethodClusterMemberList: 32, MethodClusterMemberAdd: 33, MethodClusterMemberRemove: 34, MethodClusterMemberPromote: 35,
		MethodMaintenanceStatus: 48, MethodMaintenanceMoveLeader: 49, MethodMaintenanceDefragment: 50,
		MethodMaintenanceSnapshot: 51,
	} {
		if uint16(m) != want {
			t.Errorf("%s = %d, want %d", m, uint16(m), want)
		}
	}
}
