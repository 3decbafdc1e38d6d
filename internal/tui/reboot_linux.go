package tui

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// reboot syncs and restarts the machine (needs root).
func reboot() error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		return fmt.Errorf("reboot: %w (needs root)", err)
	}
	return nil
}
