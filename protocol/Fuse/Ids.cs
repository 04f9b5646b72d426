namespace Hypervisor.Protocol.Fuse;

/// <summary>A FUSE node id (<c>fuse_in_header.nodeid</c>); 1 is the root of the share.</summary>
public readonly record struct NodeId(ulong Value)
{
    /// <summary>The root node (<c>FUSE_ROOT_ID</c>).</summary>
    public static readonly NodeId Root = new(1);

    /// <inheritdoc/>
    public override string ToString() => $"node {Value}";
}

/// <summary>A FUSE file handle (<c>fh</c> of open/read/write/release): opaque to the client.</summary>
public readonly record struct FileHandle(ulong Value)
{
    /// <inheritdoc/>
    public override string ToString() => $"fh {Value}";
}

/// <summary>The unique id of a request (<c>fuse_in_header.unique</c>), echoed in its reply.</summary>
public readonly record struct RequestId(ulong Value)
{
    /// <inheritdoc/>
    public override string ToString() => $"unique {Value}";
}
