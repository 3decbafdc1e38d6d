package provision

import (
	"errors"
	"fmt"
	"strings"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/human"
	"github.com/btyproject/bty/internal/layout"
)

// Choice is what a plan can tell, from an image's partition table, about
// where provisioning will act.
type Choice struct {
	// Partition is the partition provisioning will use, 0 when it cannot
	// be told before writing (or the whole disk is the filesystem: see
	// Table.Scheme).
	Partition int
	// Note explains the choice in words.
	Note string
}

// Choose predicts where mode will act on a disk with table t whose
// filesystems were probed (probed is false when they could not be read,
// e.g. past the decoded head of a compressed image). An error means
// provisioning cannot work on this image at all.
func Choose(mode fleet.Mode, t *layout.Table, probed bool) (Choice, error) {
	switch mode {
	case fleet.ModeCijoe:
		p := t.Largest()
		if p == nil {
			return Choice{}, errors.New("the image's partition table is empty: cijoe would have nothing to run against")
		}
		if !probed {
			return Choice{Partition: p.Number, Note: fmt.Sprintf("cijoe would run with BTY_ROOTFS on %s (%s), the largest; its filesystem is known once written", p.Name(), human.Bytes(p.Size))}, nil
		}
		if why := unsupportedRoot(p.Filesystem); why != "" {
			return Choice{}, fmt.Errorf("the image's largest partition, %s, is %s: cijoe could not run against it", p.Name(), why)
		}
		if mountType(p.Filesystem) == "" {
			return Choice{}, fmt.Errorf("the image's largest partition, %s, holds no filesystem bty can mount: cijoe could not run against it", describe(*p))
		}
		return Choice{Partition: p.Number, Note: fmt.Sprintf("cijoe would run with BTY_ROOTFS on %s, the largest", describe(*p))}, nil
	case fleet.ModeCloudInit:
		if !probed {
			return Choice{Note: "the image's filesystems are known only once written; the seed goes to the partition that holds /etc/cloud"}, nil
		}
		var cands, problems []string
		var only *layout.Partition
		for i := range t.Partitions {
			p := &t.Partitions[i]
			if why := unsupportedRoot(p.Filesystem); why != "" {
				problems = append(problems, fmt.Sprintf("%s is %s", p.Name(), why))
			}
			if isLinuxRoot(p.Filesystem) {
				cands = append(cands, describe(*p))
				only = p
			}
		}
		switch len(cands) {
		case 0:
			msg := "no partition of the image holds a Linux filesystem, so none can hold /etc/cloud"
			if len(problems) > 0 {
				msg += ": " + strings.Join(problems, "; ")
			}
			return Choice{}, errors.New(msg)
		case 1:
			return Choice{Partition: only.Number, Note: fmt.Sprintf("the seed would go to %s, the only Linux filesystem, once /etc/cloud is found on it", describe(*only))}, nil
		}
		return Choice{Note: "the seed goes to the first of " + strings.Join(cands, ", ") + " that holds /etc/cloud"}, nil
	}
	return Choice{}, nil
}

// describe is "partition 2 (ext4, 1.7 GiB)".
func describe(p layout.Partition) string {
	fs := p.Filesystem
	if fs == "" {
		fs = "no known filesystem"
	}
	return fmt.Sprintf("%s (%s, %s)", p.Name(), fs, human.Bytes(p.Size))
}
