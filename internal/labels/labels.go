// Package labels reads label selectors and checks label keys and values
// with Kubernetes' own rules (k8s.io/apimachinery), the syntax operators
// already know (docs/reference.md, "Labels and selectors"). It is
// bty-web's and bty-ctl's: the live env links none of it.
package labels

import (
	"fmt"
	"strings"

	k8s "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/btyproject/bty/internal/fleet"
)

// MaxSelectorBytes bounds a selector.
const MaxSelectorBytes = 4096

// Parse reads a selector ("role=ci,rack!=r3", "gpu", "!quarantined",
// "tier in (a,b)", "tier notin (c)") into its requirements ("": none,
// every machine).
func Parse(s string) ([]fleet.LabelRequirement, error) {
	if len(s) > MaxSelectorBytes {
		return nil, fmt.Errorf("the selector is %d bytes; the limit is %d", len(s), MaxSelectorBytes)
	}
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	sel, err := k8s.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("selector %q: %v (the Kubernetes syntax: role=ci,rack!=r3,gpu,!quarantined,tier in (a,b))", s, err)
	}
	reqs, _ := sel.Requirements()
	out := make([]fleet.LabelRequirement, 0, len(reqs))
	for _, r := range reqs {
		q := fleet.LabelRequirement{Key: r.Key(), Values: r.Values().List()}
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals:
			q.Op = fleet.LabelEquals
		case selection.NotEquals:
			q.Op = fleet.LabelNotEquals
		case selection.In:
			q.Op = fleet.LabelIn
		case selection.NotIn:
			q.Op = fleet.LabelNotIn
		case selection.Exists:
			q.Op = fleet.LabelExists
		case selection.DoesNotExist:
			q.Op = fleet.LabelNotExists
		default:
			return nil, fmt.Errorf("selector %q: the operator %s is not for labels (use =, !=, in, notin, KEY or !KEY)", s, r.Operator())
		}
		out = append(out, q)
	}
	return out, nil
}

// Check checks a label key and value (value nil: a removal).
func Check(key string, value *string) error {
	if errs := validation.IsQualifiedName(key); len(errs) > 0 {
		return fmt.Errorf("label key %q: %s", key, strings.Join(errs, "; "))
	}
	if value != nil {
		if errs := validation.IsValidLabelValue(*value); len(errs) > 0 {
			return fmt.Errorf("label %s=%q: %s", key, *value, strings.Join(errs, "; "))
		}
	}
	return nil
}

// ParseFlag reads bty-ctl's --label: KEY=VALUE sets, KEY- removes.
func ParseFlag(s string) (key string, value *string, err error) {
	if k, v, ok := strings.Cut(s, "="); ok {
		return k, &v, Check(k, &v)
	}
	if k, ok := strings.CutSuffix(s, "-"); ok && k != "" {
		return k, nil, Check(k, nil)
	}
	return "", nil, fmt.Errorf("--label %q: give KEY=VALUE to set a label or KEY- to remove it", s)
}
