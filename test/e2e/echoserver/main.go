// Command echoserver is a backend for moat's end-to-end tests that need more sockets than the test
// process may hold: it greets every connection with its address and echoes lines.
package main

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: echoserver <addr>")
		os.Exit(2)
	}
	// Hold as many connections as the hard limit allows: the soft limit a child inherits can be
	// lower.
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil {
		lim.Cur = lim.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "echoserver:", err)
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			fmt.Fprintf(c, "hello from %s\n", ln.Addr())
			// A plain buffer, not io.Copy: splicing a socket to itself holds a pipe (two more
			// descriptors) for as long as the connection waits for data.
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}
