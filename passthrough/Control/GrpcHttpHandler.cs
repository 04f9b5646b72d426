using System.Buffers;
using System.IO.Pipelines;
using Google.Protobuf;
using Hypervisor.Protocol.Control.Health;
using Hypervisor.Protocol.Grpc;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;

namespace Hypervisor.Passthrough.Control;

/// <summary>
/// Serves gRPC calls on Kestrel's HTTP/2 streams, following grpc/grpc doc/PROTOCOL-HTTP2.md:
/// request validation in the order the spec implies (method, content type, path, encoding,
/// timeout), one length-prefixed request message per unary call, replies as
/// <c>HEADERS, DATA, HEADERS(trailers)</c> and failures as trailers-only responses.
/// </summary>
internal sealed partial class GrpcHttpHandler(ControlMethods methods, ControlServerState state, int maxReceiveMessageSize,
    CancellationToken serverStopping, ILogger logger)
{
    private static readonly StringValues GrpcContentType = GrpcProtocol.ContentType;
    private static readonly StringValues Identity = GrpcProtocol.IdentityEncoding;
    private static readonly StringValues OkStatus = "0";

    public async Task HandleAsync(HttpContext context)
    {
        HttpRequest request = context.Request;
        HttpResponse response = context.Response;

        // Only POST carries gRPC calls. 405 (not a gRPC status) tells a plain HTTP client what to change.
        if (!HttpMethods.IsPost(request.Method))
        {
            response.StatusCode = StatusCodes.Status405MethodNotAllowed;
            response.Headers.Allow = "POST";
            return;
        }

        // "If Content-Type does not begin with application/grpc, gRPC servers SHOULD respond with
        // HTTP status of 415", so that other HTTP/2 clients do not take the 200 of a gRPC error for success.
        switch (GrpcProtocol.ClassifyContentType(request.ContentType))
        {
            case GrpcProtocol.ContentTypeKind.NotGrpc:
                response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
                return;
            case GrpcProtocol.ContentTypeKind.GrpcOtherSubtype:
                WriteTrailersOnly(response, GrpcStatusCode.Internal,
                    $"Content type \"{request.ContentType}\" has no codec here; send application/grpc (protobuf).");
                return;
        }

        string path = request.Path.Value ?? string.Empty;
        bool isWatch = path == ControlMethods.HealthWatchPath;
        UnaryMethod? method = null;
        if (!isWatch && !methods.TryGetUnary(path, out method))
        {
            LogUnknownMethod(logger, path);
            WriteTrailersOnly(response, GrpcStatusCode.Unimplemented, $"Method {path} is not implemented by this server.");
            return;
        }

        // Compression is not supported: an algorithm other than identity is UNIMPLEMENTED, and the
        // reply says what we accept (doc/compression.md).
        string? encoding = request.Headers[GrpcProtocol.EncodingHeader];
        if (!string.IsNullOrEmpty(encoding) && !string.Equals(encoding, GrpcProtocol.IdentityEncoding, StringComparison.OrdinalIgnoreCase))
        {
            response.Headers[GrpcProtocol.AcceptEncodingHeader] = Identity;
            WriteTrailersOnly(response, GrpcStatusCode.Unimplemented,
                $"Message encoding \"{encoding}\" is not supported; send messages uncompressed (grpc-encoding identity).");
            return;
        }

        TimeSpan? timeout = null;
        string? timeoutHeader = request.Headers[GrpcProtocol.TimeoutHeader];
        if (timeoutHeader is not null)
        {
            if (!GrpcTimeout.TryParse(timeoutHeader, out TimeSpan parsed))
            {
                WriteTrailersOnly(response, GrpcStatusCode.Internal,
                    $"The grpc-timeout header \"{timeoutHeader}\" is malformed; send 1 to 8 digits followed by one of H, M, S, m, u, n.");
                return;
            }
            timeout = parsed;
        }

        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
        if (timeout is { } t)
        {
            // CancelAfter accepts at most ~49 days; a longer deadline is as good as none.
            if (t <= TimeSpan.Zero)
                deadline.Cancel();
            else if (t.TotalMilliseconds < uint.MaxValue - 1)
                deadline.CancelAfter(t);
        }

        try
        {
            if (isWatch)
            {
                await WatchHealthAsync(context, deadline.Token).ConfigureAwait(false);
                return;
            }

            (IMessage? input, GrpcStatus error) = await ReadRequestAsync(request.BodyReader, method!.Parser, deadline.Token).ConfigureAwait(false);
            if (input is null)
            {
                WriteTrailersOnly(response, error.Code, error.Message);
                return;
            }

            // The implementation may ignore the token: the reply is sent at the deadline regardless.
            IMessage output = await method.Invoke(input, deadline.Token).AsTask().WaitAsync(deadline.Token).ConfigureAwait(false);
            WriteMessage(response, output);
            response.AppendTrailer(GrpcProtocol.StatusHeader, OkStatus);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client reset the stream: nobody is left to answer.
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            WriteError(response, GrpcStatusCode.DeadlineExceeded, "The deadline set by grpc-timeout passed before the call completed.");
        }
        catch (GrpcException e)
        {
            WriteError(response, e.StatusCode, e.Detail);
        }
        catch (Exception e)
        {
            LogFailure(logger, path, e);
            WriteError(response, GrpcStatusCode.Internal, "The control service failed: " + e.Message);
        }
    }

    /// <summary>
    /// Reads exactly one request message. Zero messages, a second message, a message cut short
    /// and a message that does not parse are INTERNAL (a broken client); an oversized one is
    /// RESOURCE_EXHAUSTED as soon as its prefix arrives.
    /// </summary>
    private async ValueTask<(IMessage?, GrpcStatus)> ReadRequestAsync(PipeReader reader, MessageParser parser, CancellationToken ct)
    {
        IMessage? message = null;
        while (true)
        {
            ReadResult read = await reader.ReadAsync(ct).ConfigureAwait(false);
            ReadOnlySequence<byte> buffer = read.Buffer;
            if (message is not null)
            {
                bool extra = !buffer.IsEmpty;
                reader.AdvanceTo(buffer.End);
                if (extra)
                    return (null, new GrpcStatus(GrpcStatusCode.Internal, "A unary call carried more than one request message; send exactly one."));
                if (read.IsCompleted)
                    return (message, GrpcStatus.Ok);
                continue;
            }

            GrpcFrameResult frame = GrpcFraming.TryRead(buffer, maxReceiveMessageSize, encodingDeclared: false,
                out ReadOnlySequence<byte> body, out long consumed, out GrpcStatus error);
            if (frame == GrpcFrameResult.Invalid)
            {
                reader.AdvanceTo(buffer.Start, buffer.End);
                return (null, error);
            }
            if (frame == GrpcFrameResult.Complete)
            {
                try
                {
                    message = parser.ParseFrom(body);
                }
                catch (InvalidProtocolBufferException e)
                {
                    reader.AdvanceTo(buffer.Start, buffer.End);
                    return (null, new GrpcStatus(GrpcStatusCode.Internal, "The request message is not valid protobuf: " + e.Message));
                }
                reader.AdvanceTo(buffer.GetPosition(consumed));
                continue;
            }
            if (read.IsCompleted)
            {
                reader.AdvanceTo(buffer.End);
                return (null, new GrpcStatus(GrpcStatusCode.Internal, buffer.IsEmpty
                    ? "The unary call carried no request message; send exactly one."
                    : "The request ended in the middle of a message."));
            }
            reader.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    /// <summary>
    /// grpc.health.v1.Health/Watch: sends the current status at once and again whenever it
    /// changes; an unknown service is reported as SERVICE_UNKNOWN rather than failing the call,
    /// as doc/health-checking.md requires. The stream ends with OK when the server stops.
    /// </summary>
    private async Task WatchHealthAsync(HttpContext context, CancellationToken ct)
    {
        HttpResponse response = context.Response;
        (IMessage? input, GrpcStatus error) = await ReadRequestAsync(context.Request.BodyReader, HealthCheckRequest.Parser, ct).ConfigureAwait(false);
        if (input is null)
        {
            WriteTrailersOnly(response, error.Code, error.Message);
            return;
        }
        string service = ((HealthCheckRequest)input).Service;
        HealthCheckResponse.Types.ServingStatus Current()
            => methods.HealthOf(service) ?? HealthCheckResponse.Types.ServingStatus.ServiceUnknown;

        HealthCheckResponse.Types.ServingStatus last = Current();
        WriteMessage(response, new HealthCheckResponse { Status = last });
        await response.BodyWriter.FlushAsync(ct).ConfigureAwait(false);

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct, serverStopping);
        try
        {
            await state.NotServing.WaitAsync(stop.Token).ConfigureAwait(false);
            if (Current() != last)
            {
                last = Current();
                WriteMessage(response, new HealthCheckResponse { Status = last });
                await response.BodyWriter.FlushAsync(ct).ConfigureAwait(false);
            }
            // NOT_SERVING is final; stay until the caller leaves or the server stops.
            await Task.Delay(Timeout.Infinite, stop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (serverStopping.IsCancellationRequested && !ct.IsCancellationRequested)
        {
        }
        response.AppendTrailer(GrpcProtocol.StatusHeader, OkStatus);
    }

    private static void WriteMessage(HttpResponse response, IMessage message)
    {
        if (!response.HasStarted)
        {
            response.StatusCode = StatusCodes.Status200OK;
            response.Headers.ContentType = GrpcContentType;
        }
        int size = message.CalculateSize();
        Span<byte> span = response.BodyWriter.GetSpan(GrpcFraming.HeaderLength + size);
        GrpcFraming.WriteHeader(span, size);
        message.WriteTo(span.Slice(GrpcFraming.HeaderLength, size));
        response.BodyWriter.Advance(GrpcFraming.HeaderLength + size);
    }

    /// <summary>Ends the call with an error: trailers-only if nothing was sent yet, trailers otherwise.</summary>
    private static void WriteError(HttpResponse response, GrpcStatusCode code, string message)
    {
        if (!response.HasStarted)
        {
            WriteTrailersOnly(response, code, message);
            return;
        }
        response.AppendTrailer(GrpcProtocol.StatusHeader, StatusValue(code));
        response.AppendTrailer(GrpcProtocol.MessageHeader, GrpcMessageEncoding.Encode(message));
    }

    /// <summary>
    /// A trailers-only response: a single HEADERS frame with END_STREAM carrying :status 200,
    /// content-type, grpc-status and grpc-message (Kestrel sends it that way when the response has
    /// neither body nor trailers).
    /// </summary>
    private static void WriteTrailersOnly(HttpResponse response, GrpcStatusCode code, string message)
    {
        response.StatusCode = StatusCodes.Status200OK;
        response.Headers.ContentType = GrpcContentType;
        response.Headers[GrpcProtocol.StatusHeader] = StatusValue(code);
        if (message.Length != 0)
            response.Headers[GrpcProtocol.MessageHeader] = GrpcMessageEncoding.Encode(message);
    }

    private static string StatusValue(GrpcStatusCode code) => ((int)code).ToString(System.Globalization.CultureInfo.InvariantCulture);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Control call to unknown method {Path}")]
    private static partial void LogUnknownMethod(ILogger logger, string path);

    [LoggerMessage(Level = LogLevel.Error, Message = "Control call {Path} failed")]
    private static partial void LogFailure(ILogger logger, string path, Exception exception);
}
