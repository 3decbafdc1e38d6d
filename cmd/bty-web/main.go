// Command bty-web is not built yet; see the project's issues.
package main

import (
	"fmt"
	"os"

	"github.com/btyproject/bty/internal/version"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Println("bty-web", version.String())
		return
	}
	fmt.Fprintln(os.Stderr, "bty-web: not yet built in this version of bty; use the bty command")
	os.Exit(1)
}
