package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// numbersAsNumbers rewrites protojson output of a message of type md so
// 64-bit integers are JSON numbers, as scripts expect, instead of the
// strings protojson writes for them. Field order is kept. protojson reads
// numbers for those fields too, so the output still round-trips.
func numbersAsNumbers(md protoreflect.MessageDescriptor, in []byte) ([]byte, error) {
	var out bytes.Buffer
	if err := rewriteMessage(&out, md, in); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func rewriteMessage(out *bytes.Buffer, md protoreflect.MessageDescriptor, in []byte) error {
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		out.Write(in) // well-known types have their own JSON forms
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("JSON of %s is not an object", md.FullName())
	}
	out.WriteByte('{')
	for i := 0; dec.More(); i++ {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return err
		}
		if i > 0 {
			out.WriteByte(',')
		}
		kb, _ := json.Marshal(key)
		out.Write(kb)
		out.WriteByte(':')
		fd := md.Fields().ByName(protoreflect.Name(key))
		if fd == nil {
			fd = md.Fields().ByJSONName(key)
		}
		if err := rewriteField(out, fd, val); err != nil {
			return err
		}
	}
	out.WriteByte('}')
	return nil
}

func rewriteField(out *bytes.Buffer, fd protoreflect.FieldDescriptor, val json.RawMessage) error {
	switch {
	case fd == nil:
		out.Write(val)
		return nil
	case fd.IsList():
		var items []json.RawMessage
		if err := json.Unmarshal(val, &items); err != nil {
			return err
		}
		out.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				out.WriteByte(',')
			}
			if err := rewriteScalar(out, fd, it); err != nil {
				return err
			}
		}
		out.WriteByte(']')
		return nil
	case fd.IsMap():
		var m map[string]json.RawMessage
		if err := json.Unmarshal(val, &m); err != nil {
			return err
		}
		b, err := json.Marshal(m) // map keys have no order of their own
		if err != nil {
			return err
		}
		out.Write(b)
		return nil
	}
	return rewriteScalar(out, fd, val)
}

func rewriteScalar(out *bytes.Buffer, fd protoreflect.FieldDescriptor, val json.RawMessage) error {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if string(val) == "null" {
			out.Write(val)
			return nil
		}
		return rewriteMessage(out, fd.Message(), val)
	case protoreflect.Int64Kind, protoreflect.Uint64Kind, protoreflect.Sint64Kind,
		protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
		var s string
		if json.Unmarshal(val, &s) == nil && json.Valid([]byte(s)) {
			out.WriteString(s)
			return nil
		}
	}
	out.Write(val)
	return nil
}
