package fleet

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Labels are a machine's key=value labels (docs/reference.md,
// "Labels and selectors"): rack, role, hardware. Keys and values follow
// Kubernetes' label syntax, which bty-web checks (internal/labels);
// this package bounds them.
type Labels map[string]string

// The bounds of a machine's labels: a key is at most 253 bytes of
// prefix, '/', and 63 of name; a value at most 63 bytes.
const (
	MaxLabels        = 64
	MaxLabelKeyBytes = 317
	MaxLabelValBytes = 63
)

// LabelUpdate changes labels as a JSON merge patch: a key with a value
// sets it, a key with null removes it, others stay.
type LabelUpdate map[string]*string

// Apply is l with u applied (a new map; nil when empty).
func (u LabelUpdate) Apply(l Labels) Labels {
	out := maps.Clone(l)
	if out == nil {
		out = Labels{}
	}
	for k, v := range u {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = *v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// validate bounds u's keys and values and the labels they leave.
func (u LabelUpdate) validate() *ValidationError {
	if len(u) > MaxLabels {
		return &ValidationError{Field: "labels", Msg: fmt.Sprintf("%d labels in one change; a machine has at most %d", len(u), MaxLabels)}
	}
	for _, k := range slices.Sorted(maps.Keys(u)) {
		switch v := u[k]; {
		case k == "" || len(k) > MaxLabelKeyBytes:
			return &ValidationError{Field: "labels", Msg: fmt.Sprintf("label key %q: 1 to %d bytes", truncate(k, 64), MaxLabelKeyBytes)}
		case v != nil && len(*v) > MaxLabelValBytes:
			return &ValidationError{Field: "labels", Msg: fmt.Sprintf("label %s: the value is %d bytes; the limit is %d", truncate(k, 64), len(*v), MaxLabelValBytes)}
		}
	}
	return nil
}

// String is l as key=value pairs by key, comma separated.
func (l Labels) String() string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(l)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + l[k])
	}
	return b.String()
}

// LabelOp is a selector requirement's operator.
type LabelOp string

// The operators of a label selector.
const (
	LabelEquals    LabelOp = "="
	LabelNotEquals LabelOp = "!="
	LabelIn        LabelOp = "in"
	LabelNotIn     LabelOp = "notin"
	LabelExists    LabelOp = "exists"
	LabelNotExists LabelOp = "!"
)

// LabelRequirement is one term of a label selector (role=ci, rack!=r3,
// gpu, !quarantined, tier in (a,b)); a selector is their conjunction.
type LabelRequirement struct {
	Key    string
	Op     LabelOp
	Values []string
}

// Matches reports whether l satisfies every requirement (Kubernetes'
// meaning: != and notin also match machines without the key).
func (l Labels) Matches(reqs []LabelRequirement) bool {
	for _, r := range reqs {
		v, ok := l[r.Key]
		switch r.Op {
		case LabelEquals, LabelIn:
			if !ok || !slices.Contains(r.Values, v) {
				return false
			}
		case LabelNotEquals, LabelNotIn:
			if ok && slices.Contains(r.Values, v) {
				return false
			}
		case LabelExists:
			if !ok {
				return false
			}
		case LabelNotExists:
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}
