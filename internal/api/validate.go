package api

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/tandemhci/tandem/internal/validate"
)

// Every admin and peer request is checked against the rules of
// internal/validate before its service method runs: services are
// registered through registerChecked, so no method, present or added
// later, can skip the check. A refused request gets InvalidArgument naming
// the rule and reaches no manager, so it changes nothing.
//
// The check runs inside the server's interceptors (authentication first)
// and applies to the fields that are set: whether a field is required is
// the service's to say. Which field holds what is the table in fieldRule;
// TestEveryNameFieldHasARule keeps it complete.

// registerChecked registers impl under desc with every request checked.
func registerChecked(s grpc.ServiceRegistrar, desc *grpc.ServiceDesc, impl any) {
	d := *desc
	d.Methods = make([]grpc.MethodDesc, len(desc.Methods))
	for i, md := range desc.Methods {
		h := md.Handler
		md.Handler = func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			// Always hand the generated handler an interceptor, so the
			// check sits between the server's chain and the method.
			return h(srv, ctx, dec, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
				checked := func(ctx context.Context, req any) (any, error) {
					if err := checkRequest(req); err != nil {
						return nil, err
					}
					return next(ctx, req)
				}
				if ic == nil {
					return checked(ctx, req)
				}
				return ic(ctx, req, info, checked)
			})
		}
		d.Methods[i] = md
	}
	d.Streams = make([]grpc.StreamDesc, len(desc.Streams))
	for i, sd := range desc.Streams {
		h := sd.Handler
		sd.Handler = func(srv any, ss grpc.ServerStream) error { return h(srv, checkedStream{ss}) }
		d.Streams[i] = sd
	}
	s.RegisterService(&d, impl)
}

// checkedStream checks each request a stream receives.
type checkedStream struct{ grpc.ServerStream }

func (s checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return checkRequest(m)
}

// checkRequest applies the rules to every set field of req, nested
// messages included.
func checkRequest(req any) error {
	m, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	if err := checkMessage(m.ProtoReflect()); err != nil {
		return status.Error(codes.InvalidArgument, validate.Message(err))
	}
	return nil
}

func checkMessage(m protoreflect.Message) error {
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		err = checkField(fd, v)
		return err == nil
	})
	return err
}

func checkField(fd protoreflect.FieldDescriptor, v protoreflect.Value) error {
	if fd.IsMap() {
		return nil
	}
	if fd.Kind() == protoreflect.MessageKind {
		if !fd.IsList() {
			return checkMessage(v.Message())
		}
		l := v.List()
		for i := range l.Len() {
			if err := checkMessage(l.Get(i).Message()); err != nil {
				return fmt.Errorf("%w: %s[%d]: %s", validate.ErrInvalid, fd.Name(), i, validate.Message(err))
			}
		}
		return nil
	}
	r, ok := fieldRule(fd.FullName())
	if !ok {
		return nil
	}
	if !fd.IsList() {
		return r.check(v)
	}
	l := v.List()
	for i := range l.Len() {
		if err := r.check(l.Get(i)); err != nil {
			return err
		}
	}
	return nil
}

// rule checks a string field (str) or an integer field (num).
type rule struct {
	str func(string) error
	num func(int64) error
}

func (r rule) check(v protoreflect.Value) error {
	if r.str != nil {
		return r.str(v.String())
	}
	return r.num(v.Int())
}

// fieldRule is the rule for a request field: which fields name a volume, a
// VM or a node, size a volume, bound a checksum or point at a host file.
func fieldRule(f protoreflect.FullName) (rule, bool) {
	switch f {
	case "tandem.v1.CreateVolumeRequest.name", "tandem.v1.ShowVolumeRequest.name", "tandem.v1.DeleteVolumeRequest.name",
		"tandem.v1.PromoteVolumeRequest.name", "tandem.v1.ResyncVolumeRequest.name", "tandem.v1.VerifyVolumeRequest.name",
		"tandem.v1.VMDisk.volume", "tandem.v1.PeerVolume.name", "tandem.v1.PeerVolumeCloseRequest.name",
		"tandem.v1.PeerVolumeStatusRequest.name", "tandem.v1.VolumeChecksumRequest.name", "tandem.v1.VMInfo.volumes",
		"tandem.v1.IssueExportCertRequest.volumes", "tandem.v1.SetVolumeRequest.name", "tandem.v1.ResizeVolumeRequest.name",
		"tandem.v1.ResizeVMDiskRequest.volume", "tandem.v1.PeerResizeDiskRequest.volume", "tandem.v1.PeerResizeDiskRequest.rbd_image",
		"tandem.v1.DetachVMDiskRequest.volume", "tandem.v1.PeerDiskRequest.volume":
		return rule{str: validate.VolumeName}, true
	case "tandem.v1.CreateVolumeRequest.ha", "tandem.v1.SetVolumeRequest.ha":
		return rule{str: validate.VolumeHA}, true
	case "tandem.v1.AddStorageRequest.name", "tandem.v1.StorageRequest.name", "tandem.v1.CreateVolumeRequest.storage",
		"tandem.v1.VMDisk.storage":
		return rule{str: validate.StorageName}, true
	case "tandem.v1.IssueExportCertRequest.name", "tandem.v1.RevokeExportCertRequest.name":
		return rule{str: validate.ExportCertName}, true
	case "tandem.v1.CreateVMRequest.name", "tandem.v1.VMRequest.name", "tandem.v1.MigrateVMRequest.name",
		"tandem.v1.ConsoleRequest.name", "tandem.v1.VMInfo.name", "tandem.v1.ConsoleOpen.vm", "tandem.v1.ResizeVMDiskRequest.name",
		"tandem.v1.SetVMRequest.name", "tandem.v1.AddVMNicRequest.name", "tandem.v1.RemoveVMNicRequest.name",
		"tandem.v1.AddVMDiskRequest.name", "tandem.v1.DetachVMDiskRequest.name":
		return rule{str: validate.VMName}, true
	case "tandem.v1.CreateVolumeRequest.nodes", "tandem.v1.PromoteVolumeRequest.node", "tandem.v1.ResyncVolumeRequest.discard_node",
		"tandem.v1.CreateVMRequest.node", "tandem.v1.VMRequest.node", "tandem.v1.MigrateVMRequest.to", "tandem.v1.PeerMigrateRequest.to",
		"tandem.v1.PeerVolume.replicas", "tandem.v1.PeerVolume.witness", "tandem.v1.VMInfo.node",
		"tandem.v1.FenceConfigRequest.name", "tandem.v1.FenceNodeRequest.name", "tandem.v1.RemoveNodeRequest.name",
		"tandem.v1.NodeMaintenanceRequest.name", "tandem.v1.PingRequest.from", "tandem.v1.PeerNodeRemovedRequest.node",
		"tandem.v1.PeerNodeRemovedRequest.removed_by", "tandem.v1.SetNodeNoteRequest.name":
		return rule{str: validate.NodeName}, true
	case "tandem.v1.UploadImageRequest.name", "tandem.v1.DeleteImageRequest.name", "tandem.v1.ChangeMediaRequest.image",
		"tandem.v1.PeerImageRequest.image", "tandem.v1.PeerChangeMediaRequest.image", "tandem.v1.CreateVMRequest.cdrom",
		"tandem.v1.VMInfo.cdrom":
		return rule{str: validate.ImageName}, true
	case "tandem.v1.UploadImageRequest.size_bytes":
		return rule{num: validate.ImageSize}, true
	case "tandem.v1.ChangeMediaRequest.name":
		return rule{str: validate.VMName}, true
	case "tandem.v1.CreateCredentialRequest.name", "tandem.v1.RevokeCredentialRequest.name":
		return rule{str: validate.CredentialName}, true
	case "tandem.v1.CreateClusterRequest.name":
		return rule{str: validate.ClusterName}, true
	case "tandem.v1.CreateVolumeRequest.size_bytes", "tandem.v1.VMDisk.size_bytes", "tandem.v1.PeerVolume.size_bytes",
		"tandem.v1.ResizeVolumeRequest.size_bytes", "tandem.v1.ResizeVMDiskRequest.size_bytes", "tandem.v1.PeerResizeDiskRequest.size_bytes":
		return rule{num: validate.VolumeSize}, true
	case "tandem.v1.VolumeChecksumRequest.offset":
		return rule{num: validate.ChecksumOffset}, true
	case "tandem.v1.VolumeChecksumRequest.length":
		return rule{num: validate.ChecksumLength}, true
	case "tandem.v1.VolumeChecksumRequest.block":
		return rule{num: validate.ChecksumBlock}, true
	case "tandem.v1.CreateVMRequest.kernel", "tandem.v1.VMInfo.kernel":
		return rule{str: func(p string) error { return validate.HostPath("kernel", p) }}, true
	case "tandem.v1.CreateVMRequest.initrd", "tandem.v1.VMInfo.initrd":
		return rule{str: func(p string) error { return validate.HostPath("initrd", p) }}, true
	case "tandem.v1.ComputeInfoRequest.paths":
		return rule{str: func(p string) error { return validate.HostPath("file", p) }}, true
	}
	return rule{}, false
}
