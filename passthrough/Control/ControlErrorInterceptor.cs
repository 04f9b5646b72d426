using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Control;

/// <summary>
/// The boundary of every control call: a status the service chose (<see cref="RpcException"/>)
/// goes to the caller as it is; a call whose token was cancelled (deadline passed, caller gone) is
/// CANCELLED, which nobody sees when the deadline already answered; anything else is a bug or a
/// daemon failure, logged once here and answered INTERNAL with its message, and the server keeps
/// serving. It also has unary replies written in one go (message and trailers together).
/// </summary>
internal sealed partial class ControlErrorInterceptor(ILoggerFactory loggerFactory) : Interceptor
{
    private readonly ILogger _logger = loggerFactory.CreateLogger(ControlServer.LogCategory);

    /// <summary>A unary reply's message is not flushed on its own: it leaves with the trailers.</summary>
    private static readonly WriteOptions NoFlush = new(WriteFlags.BufferHint);

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        // Grpc.AspNetCore flushes a unary reply's message by itself unless told otherwise, and the
        // trailers then follow in a second write: the client wakes up twice per call.
        context.WriteOptions = NoFlush;
        Task<TResponse> call;
        try
        {
            call = continuation(request, context);
        }
        catch (Exception e)
        {
            return Task.FromException<TResponse>(Translate(e, context) is { } status ? new RpcException(status) : e);
        }
        // A call that completed on this thread (status, health) passes through without a state machine of its own.
        return call.IsCompletedSuccessfully ? call : Awaited(call, context);
    }

    private async Task<TResponse> Awaited<TResponse>(Task<TResponse> call, ServerCallContext context)
    {
        try
        {
            return await call.ConfigureAwait(false);
        }
        catch (Exception e) when (Translate(e, context) is { } status)
        {
            throw new RpcException(status);
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
        }
        catch (Exception e) when (Translate(e, context) is { } status)
        {
            throw new RpcException(status);
        }
    }

    /// <summary>The status to answer with instead of <paramref name="e"/>, or null to let it through unchanged.</summary>
    private Status? Translate(Exception e, ServerCallContext context)
    {
        switch (e)
        {
            case RpcException:
                return null;
            case OperationCanceledException when context.CancellationToken.IsCancellationRequested:
                return new Status(StatusCode.Cancelled, "The call was cancelled before it completed.");
            default:
                LogCallFailed(_logger, context.Method, e);
                return new Status(StatusCode.Internal, "The control service failed: " + e.Message);
        }
    }

    [LoggerMessage(EventId = 502, Level = LogLevel.Error, Message = "Control call {Method} failed")]
    private static partial void LogCallFailed(ILogger logger, string method, Exception exception);
}
