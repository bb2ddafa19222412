package avail

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/caucus/caucus/internal/crdt"
)

// dump returns every stored state of a keyspace, tombstones included.
func dump(s *Store, ks string) (map[string][]byte, error) {
	out := make(map[string][]byte)
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(dataBucket(ks)).ForEach(func(k, v []byte) error {
			out[string(k)] = bytes.Clone(v)
			return nil
		})
	})
	return out, err
}

// treeFromData rebuilds a keyspace's tree from its states (not from the index), so comparing
// its root with the live tree checks the index and the incremental updates.
func treeFromData(s *Store, ks string) (Hash, error) {
	t := NewTree()
	states, err := dump(s, ks)
	if err != nil {
		return Hash{}, err
	}
	for k, v := range states {
		t.add(LeafOf([]byte(k)), keyHash([]byte(k), crdt.Digest(sha256.Sum256(v))))
	}
	return t.Node(0, 0), nil
}

// checkTree checks that a store's incrementally kept tree equals one rebuilt from its data.
func checkTree(s *Store, ks string) error {
	want, err := treeFromData(s, ks)
	if err != nil {
		return err
	}
	got, err := s.Root(ks)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("keyspace %q: tree root %x, rebuilt from the data %x", ks, got[:6], want[:6])
	}
	return nil
}

// sameStores is the convergence checker: both stores hold byte-identical states for the same
// keys, and equal, correct tree roots.
func sameStores(a, b *Store, ks string) error {
	for _, s := range []*Store{a, b} {
		if err := checkTree(s, ks); err != nil {
			return err
		}
	}
	da, err := dump(a, ks)
	if err != nil {
		return err
	}
	db, err := dump(b, ks)
	if err != nil {
		return err
	}
	keys := slices.Sorted(maps.Keys(da))
	for k := range db {
		if _, ok := da[k]; !ok {
			keys = append(keys, k)
		}
	}
	diff := 0
	first := ""
	for _, k := range keys {
		if !bytes.Equal(da[k], db[k]) {
			if diff == 0 {
				first = k
			}
			diff++
		}
	}
	if diff > 0 {
		return fmt.Errorf("keyspace %q: %d of %d keys differ, first %q: %x vs %x", ks, diff, len(keys), first, da[first], db[first])
	}
	ra, _ := a.Root(ks)
	rb, _ := b.Root(ks)
	if ra != rb {
		return fmt.Errorf("keyspace %q: equal states but roots %x and %x", ks, ra[:6], rb[:6])
	}
	return nil
}

// TestCheckerCatches shows the checkers fail on a planted difference and a stale tree.
func TestCheckerCatches(t *testing.T) {
	a, b := newMember(t, 1, Options{NoSync: true}), newMember(t, 2, Options{NoSync: true})
	for _, m := range []*member{a, b} {
		m.mustCreate("ks", KindAny)
	}
	if err := sameStores(a.s, b.s, "ks"); err != nil {
		t.Fatal(err)
	}
	must[Delta](t)(a.s.Incr(ctx, a.o(), "ks", []byte("c"), 1))
	if err := sameStores(a.s, b.s, "ks"); err == nil {
		t.Fatal("checker missed a key only one store has")
	}
	ks, _ := a.s.keyspace("ks")
	ks.tree.add(3, sum256{1})
	if err := checkTree(a.s, "ks"); err == nil {
		t.Fatal("checker missed a tree that disagrees with the data")
	}
}
