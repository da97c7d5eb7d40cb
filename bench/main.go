// Command bench is presenced's load harness. It measures presenced through
// a real XMPP server against a null component ("server"), and the
// component alone with the harness playing the XMPP server ("alone").
// Everything runs on 127.0.0.1 and stops by itself; see bench/README.md.
package main

import (
	"fmt"
	"os"

	"presenced/bench/internal/alone"
	"presenced/bench/internal/throughserver"
)

const usage = `usage: go run ./bench server [flags]   through Prosody or ejabberd, against a null component
       go run ./bench alone [flags]    the component alone, the harness playing the XMPP server
Run either with -h for its flags.`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = throughserver.Main(os.Args[2:], os.Stdout)
	case "alone":
		err = alone.Main(os.Args[2:], os.Stdout)
	case "-h", "-help", "--help", "help":
		fmt.Println(usage)
		return
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
