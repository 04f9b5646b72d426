namespace Hypervisor.Protocol.Fuse;

/// <summary>
/// A Linux errno value. FUSE replies carry it negated in <c>fuse_out_header.error</c>; the numbers are the
/// x86_64/arm64 Linux ones because the guest is Linux whatever the host is. The constants are the errnos the code
/// names; <see cref="Name"/> knows more, for what the host's calls return.
/// </summary>
public readonly record struct Errno(int Value)
{
    /// <summary>No error.</summary>
    public static readonly Errno Ok = new(0);
    /// <summary>Operation not permitted.</summary>
    public static readonly Errno EPERM = new(1);
    /// <summary>No such file or directory.</summary>
    public static readonly Errno ENOENT = new(2);
    /// <summary>Interrupted system call.</summary>
    public static readonly Errno EINTR = new(4);
    /// <summary>I/O error.</summary>
    public static readonly Errno EIO = new(5);
    /// <summary>No such device or address.</summary>
    public static readonly Errno ENXIO = new(6);
    /// <summary>Argument list too long.</summary>
    public static readonly Errno E2BIG = new(7);
    /// <summary>Bad file descriptor.</summary>
    public static readonly Errno EBADF = new(9);
    /// <summary>Resource temporarily unavailable.</summary>
    public static readonly Errno EAGAIN = new(11);
    /// <summary>Permission denied.</summary>
    public static readonly Errno EACCES = new(13);
    /// <summary>Device or resource busy.</summary>
    public static readonly Errno EBUSY = new(16);
    /// <summary>File exists.</summary>
    public static readonly Errno EEXIST = new(17);
    /// <summary>No such device.</summary>
    public static readonly Errno ENODEV = new(19);
    /// <summary>Not a directory.</summary>
    public static readonly Errno ENOTDIR = new(20);
    /// <summary>Is a directory.</summary>
    public static readonly Errno EISDIR = new(21);
    /// <summary>Invalid argument.</summary>
    public static readonly Errno EINVAL = new(22);
    /// <summary>Too many open files in system.</summary>
    public static readonly Errno ENFILE = new(23);
    /// <summary>Too many open files.</summary>
    public static readonly Errno EMFILE = new(24);
    /// <summary>Read-only file system.</summary>
    public static readonly Errno EROFS = new(30);
    /// <summary>Numerical result out of range.</summary>
    public static readonly Errno ERANGE = new(34);
    /// <summary>Resource deadlock would occur.</summary>
    public static readonly Errno EDEADLK = new(35);
    /// <summary>File name too long.</summary>
    public static readonly Errno ENAMETOOLONG = new(36);
    /// <summary>Function not implemented.</summary>
    public static readonly Errno ENOSYS = new(38);
    /// <summary>Directory not empty.</summary>
    public static readonly Errno ENOTEMPTY = new(39);
    /// <summary>Too many levels of symbolic links.</summary>
    public static readonly Errno ELOOP = new(40);
    /// <summary>No data available (no such extended attribute).</summary>
    public static readonly Errno ENODATA = new(61);
    /// <summary>Protocol error.</summary>
    public static readonly Errno EPROTO = new(71);
    /// <summary>Operation not supported.</summary>
    public static readonly Errno EOPNOTSUPP = new(95);
    /// <summary>Stale file handle.</summary>
    public static readonly Errno ESTALE = new(116);

    /// <summary>True when this is not <see cref="Ok"/>.</summary>
    public bool IsError => Value != 0;

    /// <summary>The symbolic name, e.g. <c>ENOENT</c>, or <c>E?</c> for numbers this type does not name.</summary>
    public string Name => Value switch
    {
        0 => "OK", 1 => "EPERM", 2 => "ENOENT", 4 => "EINTR", 5 => "EIO", 6 => "ENXIO", 7 => "E2BIG", 9 => "EBADF",
        11 => "EAGAIN", 12 => "ENOMEM", 13 => "EACCES", 14 => "EFAULT", 16 => "EBUSY", 17 => "EEXIST", 18 => "EXDEV",
        19 => "ENODEV", 20 => "ENOTDIR", 21 => "EISDIR", 22 => "EINVAL", 23 => "ENFILE", 24 => "EMFILE",
        26 => "ETXTBSY", 27 => "EFBIG", 28 => "ENOSPC", 29 => "ESPIPE", 30 => "EROFS", 31 => "EMLINK", 34 => "ERANGE",
        35 => "EDEADLK", 36 => "ENAMETOOLONG", 37 => "ENOLCK", 38 => "ENOSYS", 39 => "ENOTEMPTY", 40 => "ELOOP",
        61 => "ENODATA", 71 => "EPROTO", 75 => "EOVERFLOW", 95 => "EOPNOTSUPP", 116 => "ESTALE", 122 => "EDQUOT",
        _ => "E?",
    };

    /// <summary>Formats as <c>ENOENT (2)</c>.</summary>
    public override string ToString() => $"{Name} ({Value})";
}

/// <summary>
/// The outcome of a filesystem operation: either a value or an <see cref="Errno"/>. A struct, so returning one
/// allocates nothing.
/// </summary>
public readonly struct Result<T>
{
    private readonly T _value;

    /// <summary>The error; <see cref="Errno.Ok"/> when the operation succeeded.</summary>
    public Errno Error { get; }

    /// <summary>True when the operation succeeded.</summary>
    public bool IsOk => Error.Value == 0;

    /// <summary>The value; only meaningful when <see cref="IsOk"/>.</summary>
    public T Value => IsOk ? _value : throw new InvalidOperationException($"Result holds {Error}, not a value.");

    private Result(T value, Errno error)
    {
        _value = value;
        Error = error;
    }

    /// <summary>A successful result.</summary>
    public static implicit operator Result<T>(T value) => new(value, Errno.Ok);

    /// <summary>A failed result; <paramref name="error"/> must not be <see cref="Errno.Ok"/>.</summary>
    public static implicit operator Result<T>(Errno error) =>
        new(default!, error.Value == 0 ? throw new ArgumentException("A failed result needs a non-zero errno.", nameof(error)) : error);

    /// <inheritdoc/>
    public override string ToString() => IsOk ? $"Ok({_value})" : Error.ToString();
}
