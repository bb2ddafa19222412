package client

import (
	"fmt"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// Cmp is a transaction compare: a target of a key (its value, version, create or mod revision,
// or lease) against a constant. Build it with Compare(Value("k"), "=", "v").
type Cmp struct {
	target caucusv1.Compare_Target
	result caucusv1.Compare_Result
	key    []byte
	end    []byte
	num    int64
	value  []byte
}

// Value targets the value of key.
func Value(key string) Cmp { return Cmp{target: caucusv1.Compare_VALUE, key: []byte(key)} }

// Version targets the version of key (0 when it does not exist).
func Version(key string) Cmp { return Cmp{target: caucusv1.Compare_VERSION, key: []byte(key)} }

// CreateRevision targets the create revision of key (0 when it does not exist).
func CreateRevision(key string) Cmp { return Cmp{target: caucusv1.Compare_CREATE, key: []byte(key)} }

// ModRevision targets the mod revision of key (0 when it does not exist).
func ModRevision(key string) Cmp { return Cmp{target: caucusv1.Compare_MOD, key: []byte(key)} }

// LeaseValue targets the lease attached to key (0 when none).
func LeaseValue(key string) Cmp { return Cmp{target: caucusv1.Compare_LEASE, key: []byte(key)} }

// Compare completes cmp with an operator ("=", "!=", ">", "<") and the constant v: a string or
// []byte for Value, an integer for the others. Like a malformed regexp.MustCompile, a wrong
// operator or type is a programming error and panics; callers taking the operator from user
// input validate it with CompareResult first.
func Compare(cmp Cmp, result string, v any) Cmp {
	r, err := CompareResult(result)
	if err != nil {
		panic(err)
	}
	cmp.result = r
	if cmp.target == caucusv1.Compare_VALUE {
		switch v := v.(type) {
		case string:
			cmp.value = []byte(v)
		case []byte:
			cmp.value = append([]byte(nil), v...)
		default:
			panic(fmt.Sprintf("client: Compare of a value with %T, want string or []byte", v))
		}
		return cmp
	}
	switch v := v.(type) {
	case int64:
		cmp.num = v
	case int:
		cmp.num = int64(v)
	case int32:
		cmp.num = int64(v)
	case uint64:
		cmp.num = int64(v)
	default:
		panic(fmt.Sprintf("client: Compare of %v with %T, want an integer", cmp.target, v))
	}
	return cmp
}

// CompareResult parses a compare operator: "=" (or "=="), "!=", ">", "<".
func CompareResult(op string) (caucusv1.Compare_Result, error) {
	switch op {
	case "=", "==":
		return caucusv1.Compare_EQUAL, nil
	case "!=":
		return caucusv1.Compare_NOT_EQUAL, nil
	case ">":
		return caucusv1.Compare_GREATER, nil
	case "<":
		return caucusv1.Compare_LESS, nil
	}
	return 0, fmt.Errorf("client: unknown compare operator %q (want =, !=, > or <)", op)
}

// WithRange applies the compare to every key in [key, end).
func (c Cmp) WithRange(end string) Cmp {
	c.end = []byte(end)
	return c
}

// WithPrefix applies the compare to every key starting with key.
func (c Cmp) WithPrefix() Cmp {
	c.end = PrefixEnd(c.key)
	return c
}

func (c Cmp) proto() *caucusv1.Compare {
	p := &caucusv1.Compare{Result: c.result, Target: c.target, Key: c.key, RangeEnd: c.end}
	switch c.target {
	case caucusv1.Compare_VALUE:
		p.TargetUnion = &caucusv1.Compare_Value{Value: c.value}
	case caucusv1.Compare_VERSION:
		p.TargetUnion = &caucusv1.Compare_Version{Version: c.num}
	case caucusv1.Compare_CREATE:
		p.TargetUnion = &caucusv1.Compare_CreateRevision{CreateRevision: c.num}
	case caucusv1.Compare_MOD:
		p.TargetUnion = &caucusv1.Compare_ModRevision{ModRevision: c.num}
	case caucusv1.Compare_LEASE:
		p.TargetUnion = &caucusv1.Compare_Lease{Lease: c.num}
	}
	return p
}
