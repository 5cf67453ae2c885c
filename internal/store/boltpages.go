package store

import (
	"encoding/binary"
	"fmt"
	"os"
)

// bbolt reads its pages through a memory map and trusts every offset in them: a damaged element
// position or child page sends it outside the map (a fault that kills the process, also inside
// bbolt's own consistency check, which runs in a goroutine of its own) or into an assertion. So
// before bbolt opens a file, checkPages walks every page reachable from the newest meta page by
// reading the file, and checks what bbolt would follow: page IDs and types, element counts,
// positions and sizes within their page, child pages within the file and reached once. Past it,
// bbolt's reads stay within the file, and its Check can look for the rest.
//
// The page layout (bbolt's internal/common): a 16-byte header (id uint64, flags uint16, count
// uint16, overflow uint32), then count elements of 16 bytes, in the machine's byte order. A branch
// element is (pos, ksize uint32, child page uint64), a leaf element (flags, pos, ksize, vsize
// uint32); pos counts from the element itself. A leaf element flagged as a bucket holds a bucket
// header (root page, sequence uint64), and when root is 0 the bucket's leaf page inline after it.
const (
	branchFlag    = 0x01
	leafFlag      = 0x02
	freelistFlag  = 0x10
	elementSize   = 16
	bucketLeaf    = 0x01
	bucketHdrSize = 16
	maxDepth      = 64
)

type pageWalker struct {
	f        *os.File
	pageSize uint64
	pgid     uint64 // pages in use: every page ID is below it
	seen     map[uint64]bool
}

func checkPages(f *os.File, m meta) error {
	w := &pageWalker{f: f, pageSize: uint64(m.pageSize), pgid: m.pgid, seen: map[uint64]bool{0: true, 1: true}}
	if m.freelist != noFreelist {
		if err := w.checkFreelist(m.freelist); err != nil {
			return err
		}
	}
	return w.checkTree(m.root, 0)
}

// page reads page id with its overflow pages, once.
func (w *pageWalker) page(id uint64) (flags uint16, count int, data []byte, err error) {
	if id < 2 || id >= w.pgid {
		return 0, 0, nil, fmt.Errorf("a reference to page %d, outside the file's %d pages", id, w.pgid)
	}
	var hdr [pageHeaderSize]byte
	if _, err := w.f.ReadAt(hdr[:], int64(id*w.pageSize)); err != nil {
		return 0, 0, nil, fmt.Errorf("page %d: %w", id, err)
	}
	ne := binary.NativeEndian
	if got := ne.Uint64(hdr[0:]); got != id {
		return 0, 0, nil, fmt.Errorf("page %d says it is page %d", id, got)
	}
	overflow := uint64(ne.Uint32(hdr[12:]))
	if id+overflow >= w.pgid {
		return 0, 0, nil, fmt.Errorf("page %d runs %d pages past the file's %d pages", id, overflow, w.pgid)
	}
	for p := id; p <= id+overflow; p++ {
		if w.seen[p] {
			return 0, 0, nil, fmt.Errorf("page %d is reached twice", p)
		}
		w.seen[p] = true
	}
	data = make([]byte, (overflow+1)*w.pageSize)
	if _, err := w.f.ReadAt(data, int64(id*w.pageSize)); err != nil {
		return 0, 0, nil, fmt.Errorf("page %d: %w", id, err)
	}
	return ne.Uint16(hdr[8:]), int(ne.Uint16(hdr[10:])), data, nil
}

func (w *pageWalker) checkFreelist(id uint64) error {
	flags, count, data, err := w.page(id)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	if flags != freelistFlag {
		return fmt.Errorf("freelist page %d has type %#x", id, flags)
	}
	ne := binary.NativeEndian
	first := uint64(pageHeaderSize)
	n := uint64(count)
	if count == 0xffff { // the count is the first element
		n = ne.Uint64(data[pageHeaderSize:])
		first += 8
	}
	if n > (uint64(len(data))-first)/8 {
		return fmt.Errorf("freelist page %d lists %d pages, more than it holds", id, n)
	}
	for i := range n {
		if free := ne.Uint64(data[first+8*i:]); free < 2 || free >= w.pgid {
			return fmt.Errorf("freelist page %d frees page %d, outside the file's %d pages", id, free, w.pgid)
		}
	}
	return nil
}

func (w *pageWalker) checkTree(id uint64, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("page %d is %d levels deep", id, depth)
	}
	flags, count, data, err := w.page(id)
	if err != nil {
		return err
	}
	switch flags {
	case branchFlag:
		if count == 0 {
			return fmt.Errorf("branch page %d is empty", id)
		}
		elems, err := elements(data, count)
		if err != nil {
			return fmt.Errorf("page %d: %w", id, err)
		}
		ne := binary.NativeEndian
		for i, e := range elems {
			if _, err := span(data, e, ne.Uint32(data[e:]), ne.Uint32(data[e+4:]), 0); err != nil {
				return fmt.Errorf("page %d element %d: %w", id, i, err)
			}
			if err := w.checkTree(ne.Uint64(data[e+8:]), depth+1); err != nil {
				return err
			}
		}
		return nil
	case leafFlag:
		if err := w.checkLeaf(data, count, depth); err != nil {
			return fmt.Errorf("page %d: %w", id, err)
		}
		return nil
	}
	return fmt.Errorf("page %d has type %#x where a branch or leaf page belongs", id, flags)
}

// checkLeaf checks a leaf page (data, read from the file or inline in a bucket record) and the
// buckets its elements hold.
func (w *pageWalker) checkLeaf(data []byte, count, depth int) error {
	elems, err := elements(data, count)
	if err != nil {
		return err
	}
	ne := binary.NativeEndian
	for i, e := range elems {
		value, err := span(data, e, ne.Uint32(data[e+4:]), ne.Uint32(data[e+8:]), ne.Uint32(data[e+12:]))
		if err != nil {
			return fmt.Errorf("element %d: %w", i, err)
		}
		if ne.Uint32(data[e:])&bucketLeaf == 0 {
			continue
		}
		if len(value) < bucketHdrSize {
			return fmt.Errorf("element %d: a bucket of %d bytes", i, len(value))
		}
		if root := ne.Uint64(value); root != 0 {
			if err := w.checkTree(root, depth+1); err != nil {
				return err
			}
			continue
		}
		inline := value[bucketHdrSize:]
		if len(inline) < pageHeaderSize {
			return fmt.Errorf("element %d: an inline bucket of %d bytes", i, len(inline))
		}
		if flags := ne.Uint16(inline[8:]); flags != leafFlag {
			return fmt.Errorf("element %d: an inline bucket of type %#x", i, flags)
		}
		if depth >= maxDepth {
			return fmt.Errorf("element %d: buckets %d levels deep", i, depth)
		}
		if err := w.checkLeaf(inline, int(ne.Uint16(inline[10:])), depth+1); err != nil {
			return fmt.Errorf("element %d's inline bucket: %w", i, err)
		}
	}
	return nil
}

// elements returns the offsets of a page's count elements, which must fit in it.
func elements(data []byte, count int) ([]int, error) {
	if pageHeaderSize+count*elementSize > len(data) {
		return nil, fmt.Errorf("%d elements do not fit in %d bytes", count, len(data))
	}
	out := make([]int, count)
	for i := range out {
		out[i] = pageHeaderSize + i*elementSize
	}
	return out, nil
}

// span checks that the key and value of the element at offset e lie within data, and returns the
// value.
func span(data []byte, e int, pos, ksize, vsize uint32) ([]byte, error) {
	start := uint64(e) + uint64(pos)
	end := start + uint64(ksize) + uint64(vsize)
	if end > uint64(len(data)) {
		return nil, fmt.Errorf("key and value at bytes %d-%d, past the page's %d", start, end, len(data))
	}
	return data[start+uint64(ksize) : end], nil
}
