using Hypervisor.Passthrough.Engine;
using Hypervisor.Protocol.Fuse;
using static Hypervisor.Passthrough.Tests.FuseFrames;

namespace Hypervisor.Passthrough.Tests.Engine;

/// <summary>The engine on its own, against a filesystem that implements nothing.</summary>
public class FuseEngineTests
{
    private readonly byte[] _reply = new byte[FuseEngine.MaxReplySize];

    private static FuseEngine Started(IFileSystem? fs = null)
    {
        var engine = new FuseEngine(fs ?? new NullFileSystem());
        var reply = new byte[FuseEngine.MaxReplySize];
        Assert.True(engine.Handle(Init(), reply) > 16);
        return engine;
    }

    [Fact]
    public void InitNegotiatesDownToTheClientsMinor()
    {
        var engine = new FuseEngine(new NullFileSystem());
        var length = engine.Handle(Init(minor: 31, flags: InitFlags.AsyncRead | InitFlags.MaxPages | InitFlags.BigWrites), _reply);
        Assert.Equal(16 + 64, length);
        var header = Header(_reply);
        Assert.Equal(0, header.Error);
        Assert.Equal(1ul, header.Unique);
        var init = Payload<InitOut>(_reply);
        Assert.Equal(7u, init.Major);
        Assert.Equal(31u, init.Minor);
        Assert.Equal((uint)FuseEngine.MaxWrite, init.MaxWrite);
        Assert.Equal(FuseEngine.MaxPages, init.MaxPages);
        Assert.True(init.MaxWrite >= 1 << 20);
        // Only flags the client offered come back.
        Assert.Equal(0u, init.Flags & ~(uint)(InitFlags.AsyncRead | InitFlags.MaxPages | InitFlags.BigWrites));
        Assert.Equal(31u, engine.ProtocolMinor);
    }

    [Fact]
    public void InitAnswersTheNewestMinorWithFlags2()
    {
        var engine = new FuseEngine(new NullFileSystem());
        var length = engine.Handle(Init(minor: 41, flags: InitFlags.InitExt | InitFlags.MaxPages), _reply);
        Assert.Equal(16 + 64, length);
        var init = Payload<InitOut>(_reply);
        Assert.Equal(FuseConstants.KernelMinorVersion, init.Minor);
        Assert.NotEqual(0u, init.Flags & (uint)InitFlags.InitExt);
    }

    [Fact]
    public void OldMinorsGetTheShortInitReply()
    {
        var engine = new FuseEngine(new NullFileSystem());
        Assert.Equal(16 + 24, engine.Handle(Init(minor: 22), _reply));
    }

    [Fact]
    public void UnsupportedMajorIsRefused()
    {
        var engine = new FuseEngine(new NullFileSystem());
        var init = new InitIn { Major = 6, Minor = 10 };
        engine.Handle(Build(FuseOpcode.Init, 3, 0, Struct(init).AsSpan(0, 16)), _reply);
        Assert.Equal(-Errno.EPROTO.Value, Header(_reply).Error);
    }

    [Fact]
    public void RequestsBeforeInitFailWithEio()
    {
        var engine = new FuseEngine(new NullFileSystem());
        engine.Handle(Build(FuseOpcode.GetAttr, 8, 1, new byte[16]), _reply);
        Assert.Equal(-Errno.EIO.Value, Header(_reply).Error);
        Assert.Equal(8ul, Header(_reply).Unique);
    }

    [Theory]
    [InlineData(FuseOpcode.Lookup)]
    [InlineData(FuseOpcode.GetAttr)]
    [InlineData(FuseOpcode.Open)]
    [InlineData(FuseOpcode.StatFs)]
    [InlineData(FuseOpcode.BMap)]
    [InlineData(FuseOpcode.IoCtl)]
    [InlineData((FuseOpcode)99)]
    [InlineData((FuseOpcode)4096)]
    public void UnimplementedOperationsAnswerEnosysWithTheirUnique(FuseOpcode opcode)
    {
        var engine = Started();
        var length = engine.Handle(Build(opcode, 1234, 1, Concat(new byte[64], Name("x"))), _reply);
        Assert.Equal(16, length);
        Assert.Equal(-Errno.ENOSYS.Value, Header(_reply).Error);
        Assert.Equal(1234ul, Header(_reply).Unique);
    }

    [Fact]
    public void ForgetsAndInterruptsGetNoReply()
    {
        var engine = Started();
        Assert.Equal(0, engine.Handle(Build(FuseOpcode.Forget, 5, 2, Struct(new ForgetIn { Nlookup = 1 })), _reply));
        Assert.Equal(0, engine.Handle(Build(FuseOpcode.BatchForget, 6, 0, Concat(Struct(new BatchForgetIn { Count = 1 }), Struct(new ForgetOne { Nodeid = 2, Nlookup = 1 }))), _reply));
        Assert.Equal(0, engine.Handle(Build(FuseOpcode.Interrupt, 7, 0, Struct(new InterruptIn { Unique = 5 })), _reply));
    }

    [Fact]
    public void FrameShorterThanAHeaderIsDropped()
    {
        var engine = Started();
        Assert.Equal(0, engine.Handle(new byte[20], _reply));
        Assert.Equal(1, engine.Counters.Malformed);
    }

    [Fact]
    public void LyingLengthIsAnsweredWithEinval()
    {
        var engine = Started();
        var frame = Build(FuseOpcode.GetAttr, 55, 1, new byte[16], lengthOverride: 4000);
        Assert.Equal(16, engine.Handle(frame, _reply));
        Assert.Equal(-Errno.EINVAL.Value, Header(_reply).Error);
        Assert.Equal(55ul, Header(_reply).Unique);
    }

    [Fact]
    public void NameWithoutNulIsAnsweredWithEinval()
    {
        var fs = new RecordingFileSystem();
        var engine = Started(fs);
        engine.Handle(Build(FuseOpcode.Lookup, 9, 1, "no-terminator"u8), _reply);
        Assert.Equal(-Errno.EINVAL.Value, Header(_reply).Error);
        Assert.Equal(0, fs.Lookups);
    }

    [Fact]
    public void WriteWhosePayloadIsShorterThanDeclaredIsRefused()
    {
        var fs = new RecordingFileSystem();
        var engine = Started(fs);
        var write = new WriteIn { Fh = 1, Size = 100 };
        engine.Handle(Build(FuseOpcode.Write, 10, 2, Concat(Struct(write), new byte[10])), _reply);
        Assert.Equal(-Errno.EINVAL.Value, Header(_reply).Error);
        Assert.Equal(0, fs.Writes);
    }

    [Fact]
    public void BatchForgetWithALyingCountForgetsOnlyWhatIsThere()
    {
        var fs = new RecordingFileSystem();
        var engine = Started(fs);
        var body = Concat(Struct(new BatchForgetIn { Count = 1_000_000 }), Struct(new ForgetOne { Nodeid = 3, Nlookup = 2 }));
        Assert.Equal(0, engine.Handle(Build(FuseOpcode.BatchForget, 11, 0, body), _reply));
        Assert.Equal(2ul, fs.Forgotten);
        Assert.Equal(1, engine.Counters.Malformed);
    }

    [Fact]
    public void ReadNeverAsksForMoreThanTheReplyHolds()
    {
        var fs = new RecordingFileSystem();
        var engine = Started(fs);
        var small = new byte[100];
        engine.Handle(Build(FuseOpcode.Read, 12, 2, Struct(new ReadIn { Fh = 1, Size = uint.MaxValue })), small);
        Assert.Equal(100 - 16, fs.LastReadDestination);
    }

    [Fact]
    public void ExceptionsBecomeEioAndTheEngineKeepsServing()
    {
        var engine = Started(new ThrowingFileSystem());
        engine.Handle(Build(FuseOpcode.GetAttr, 13, 1, new byte[16]), _reply);
        Assert.Equal(-Errno.EIO.Value, Header(_reply).Error);
        engine.Handle(Build(FuseOpcode.StatFs, 14, 1, []), _reply);
        Assert.Equal(-Errno.ENOSYS.Value, Header(_reply).Error);
        Assert.Equal(14ul, Header(_reply).Unique);
    }

    [Fact]
    public void SecondInitStartsANewSession()
    {
        var fs = new RecordingFileSystem();
        var engine = Started(fs);
        Assert.Equal(0, fs.Destroys);
        engine.Handle(Init(minor: 31, unique: 2), _reply);
        Assert.Equal(1, fs.Destroys);
        Assert.Equal(31u, engine.ProtocolMinor);
    }

    [Fact]
    public async Task InterruptCutsABlockingLockWaitShort()
    {
        var fs = new RecordingFileSystem { LockResult = Errno.EAGAIN };
        var engine = Started(fs);
        var reply = new byte[64];
        var wait = Task.Run(() => engine.Handle(Build(FuseOpcode.SetLkW, 77, 2, Struct(new LkIn { Fh = 1 })), reply));
        SpinWait.SpinUntil(() => fs.LockAttempts > 2, TimeSpan.FromSeconds(5));
        Assert.False(wait.IsCompleted);
        engine.Handle(Build(FuseOpcode.Interrupt, 78, 0, Struct(new InterruptIn { Unique = 77 })), _reply);
        Assert.Same(wait, await Task.WhenAny(wait, Task.Delay(TimeSpan.FromSeconds(5))));
        Assert.Equal(-Errno.EINTR.Value, Header(reply).Error);
        Assert.Equal(77ul, Header(reply).Unique);
    }

    [Fact]
    public void CountersTrackRequestsAndErrorsPerOpcode()
    {
        var engine = Started();
        engine.Handle(Build(FuseOpcode.GetAttr, 2, 1, new byte[16]), _reply);
        engine.Handle(Build(FuseOpcode.GetAttr, 3, 1, new byte[16]), _reply);
        Assert.Equal(2, engine.Counters.Requests((int)FuseOpcode.GetAttr));
        Assert.Equal(2, engine.Counters.Errors((int)FuseOpcode.GetAttr));
    }

    private sealed class RecordingFileSystem : IFileSystem
    {
        public int Lookups, Writes, Destroys, LockAttempts, LastReadDestination;
        public ulong Forgotten;
        public Errno LockResult = Errno.Ok;

        public void Destroy() => Destroys++;
        public Result<EntryOut> Lookup(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name) { Lookups++; return Errno.ENOENT; }
        public Result<uint> Write(in FuseContext ctx, NodeId node, in WriteIn args, ReadOnlySpan<byte> data) { Writes++; return (uint)data.Length; }
        public void Forget(NodeId node, ulong count) => Forgotten += count;
        public Result<int> Read(in FuseContext ctx, NodeId node, in ReadIn args, Span<byte> destination) { LastReadDestination = destination.Length; return 0; }
        public Errno SetLk(in FuseContext ctx, NodeId node, in LkIn args, bool wait) { Interlocked.Increment(ref LockAttempts); return LockResult; }
    }

    private sealed class ThrowingFileSystem : IFileSystem
    {
        public Result<AttrOut> GetAttr(in FuseContext ctx, NodeId node, FileHandle? handle) => throw new InvalidOperationException("boom");
    }
}
