package adminclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// MarshalJSON encodes m the way 'tandem -o json' prints it: proto field
// names, every field present, 64-bit integers as JSON numbers (protojson
// writes them as strings), and enum values by the names the CLI's tables
// use (UpToDate, witness, non-voting, online; "" for unspecified). Field
// order is the message's. The result is indented and ends in a newline.
func MarshalJSON(m proto.Message) ([]byte, error) {
	md := m.ProtoReflect().Descriptor()
	b, err := protojson.MarshalOptions{EmitUnpopulated: true, UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s as JSON: %w", md.FullName(), err)
	}
	var out bytes.Buffer
	if err := rewriteMessage(&out, md, b, toCLI); err != nil {
		return nil, fmt.Errorf("encode %s as JSON: %w", md.FullName(), err)
	}
	var ind bytes.Buffer
	if err := json.Indent(&ind, out.Bytes(), "", "  "); err != nil {
		return nil, fmt.Errorf("encode %s as JSON: %w", md.FullName(), err)
	}
	ind.WriteByte('\n')
	return ind.Bytes(), nil
}

// UnmarshalJSON decodes what MarshalJSON writes, or plain protojson, into
// m. Unknown fields are ignored, so a newer daemon's output still reads.
func UnmarshalJSON(b []byte, m proto.Message) error {
	md := m.ProtoReflect().Descriptor()
	var out bytes.Buffer
	if err := rewriteMessage(&out, md, bytes.TrimSpace(b), fromCLI); err != nil {
		return fmt.Errorf("decode %s from JSON: %w", md.FullName(), err)
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(out.Bytes(), m)
}

type direction int

const (
	toCLI direction = iota
	fromCLI
)

func rewriteMessage(out *bytes.Buffer, md protoreflect.MessageDescriptor, in []byte, dir direction) error {
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		out.Write(in) // well-known types have JSON forms of their own
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
		if err := rewriteField(out, fd, val, dir); err != nil {
			return err
		}
	}
	out.WriteByte('}')
	return nil
}

func rewriteField(out *bytes.Buffer, fd protoreflect.FieldDescriptor, val json.RawMessage, dir direction) error {
	switch {
	case fd == nil || string(val) == "null":
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
			if err := rewriteValue(out, fd, it, dir); err != nil {
				return err
			}
		}
		out.WriteByte(']')
		return nil
	case fd.IsMap():
		out.Write(val) // only string maps in this API
		return nil
	}
	return rewriteValue(out, fd, val, dir)
}

func rewriteValue(out *bytes.Buffer, fd protoreflect.FieldDescriptor, val json.RawMessage, dir direction) error {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return rewriteMessage(out, fd.Message(), val, dir)
	case protoreflect.Int64Kind, protoreflect.Uint64Kind, protoreflect.Sint64Kind,
		protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
		var s string
		if dir == toCLI && json.Unmarshal(val, &s) == nil && json.Valid([]byte(s)) {
			out.WriteString(s)
			return nil
		}
	case protoreflect.EnumKind:
		var s string
		if json.Unmarshal(val, &s) != nil {
			break // a number: protojson reads it as it is
		}
		ed := fd.Enum()
		for i := range ed.Values().Len() {
			v := ed.Values().Get(i)
			if (dir == toCLI && string(v.Name()) == s) || (dir == fromCLI && (EnumName(v) == s || string(v.Name()) == s)) {
				name := EnumName(v)
				if dir == fromCLI {
					name = string(v.Name())
				}
				b, _ := json.Marshal(name)
				out.Write(b)
				return nil
			}
		}
	}
	out.Write(val)
	return nil
}

// EnumName is the name the CLI shows for an enum value: the value's name
// without its enum's prefix, lower case with dashes (NODE_ROLE_WITNESS is
// "witness", VOTE_NON_VOTING "non-voting"), except replica states, which
// keep DRBD's spelling (REPLICA_STATE_UP_TO_DATE is "UpToDate"). The zero
// value of an enum whose zero is UNSPECIFIED is "".
func EnumName(v protoreflect.EnumValueDescriptor) string {
	ed := v.Parent().(protoreflect.EnumDescriptor)
	s := strings.TrimPrefix(string(v.Name()), screaming(string(ed.Name()))+"_")
	switch {
	case s == "UNSPECIFIED":
		return ""
	case ed.Name() == "ReplicaState":
		var b strings.Builder
		for _, w := range strings.Split(s, "_") {
			b.WriteString(w[:1] + strings.ToLower(w[1:]))
		}
		return b.String()
	}
	return strings.ReplaceAll(strings.ToLower(s), "_", "-")
}

// screaming turns ReplicaState into REPLICA_STATE.
func screaming(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}
