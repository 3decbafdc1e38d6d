package provision_test

import (
	"testing"

	"github.com/btyproject/bty/internal/looptest"
)

// rootWithCloud is a minimal root tree with cloud-init installed.
func rootWithCloud(hostname string) map[string]string {
	return map[string]string{
		"etc/hostname":                    hostname + "\n",
		"etc/cloud/cloud.cfg":             "datasource_list: [ NoCloud, None ]\n",
		"etc/cloud/cloud.cfg.d/":          "",
		"usr/bin/":                        "",
		"var/lib/cloud/":                  "",
		"etc/fstab":                       "UUID=1234 / ext4 defaults 0 1\n",
		"etc/os-release":                  "ID=debian\n",
		"usr/lib/os-release":              "ID=debian\n",
		"var/lib/cloud/seed/nocloud-net/": "",
	}
}

// rootWithoutCloud is a root tree without cloud-init.
func rootWithoutCloud() map[string]string {
	return map[string]string{"etc/hostname": "plain\n", "etc/os-release": "ID=debian\n", "usr/bin/": ""}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return looptest.Run(t, name, args...)
}
