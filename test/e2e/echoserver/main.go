// Command echoserver is a backend for moat's end-to-end tests that need more sockets than the test
// process may hold: it greets every connection with its address and echoes lines.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "dial" {
		dial(os.Args[2:])
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: echoserver <addr> | echoserver dial <addr> [source-ip]")
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

// dial connects to addr (from source-ip, if given), prints the greeting and exits 0, or prints
// the error and exits 1. Tests run it inside network namespaces as a client host.
func dial(args []string) {
	d := net.Dialer{Timeout: time.Second}
	if len(args) > 1 {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(args[1])}
	}
	c, err := d.Dial("tcp", args[0])
	if err == nil {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		var line string
		line, err = bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err == nil {
			fmt.Print(line)
			return
		}
	}
	fmt.Println("error:", err)
	os.Exit(1)
}
