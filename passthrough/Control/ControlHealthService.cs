using Grpc.Core;
using Grpc.Health.V1;
using Grpc.HealthCheck;
using Microsoft.Extensions.Hosting;

namespace Hypervisor.Passthrough.Control;

/// <summary>
/// The standard <c>grpc.health.v1.Health</c> service (Grpc.HealthCheck's implementation), whose
/// Watch streams also end, with OK, when the server starts stopping.
/// </summary>
/// <remarks>
/// A Watch otherwise lasts until its caller leaves, and Kestrel's graceful stop waits for calls in
/// flight: one monitoring client would hold every daemon shutdown for the whole shutdown timeout.
/// doc/health-checking.md lets a server end a Watch; the client is expected to call again.
/// </remarks>
internal sealed class ControlHealthService(IHostApplicationLifetime lifetime) : HealthServiceImpl
{
    public override async Task Watch(HealthCheckRequest request, IServerStreamWriter<HealthCheckResponse> responseStream, ServerCallContext context)
    {
        using var ends = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, lifetime.ApplicationStopping);
        await base.Watch(request, responseStream, new EndingCallContext(context, ends.Token)).ConfigureAwait(false);
    }

    /// <summary>The call's context with a cancellation token that also fires when the server stops.</summary>
    private sealed class EndingCallContext(ServerCallContext inner, CancellationToken token) : ServerCallContext
    {
        protected override string MethodCore => inner.Method;
        protected override string HostCore => inner.Host;
        protected override string PeerCore => inner.Peer;
        protected override DateTime DeadlineCore => inner.Deadline;
        protected override Metadata RequestHeadersCore => inner.RequestHeaders;
        protected override CancellationToken CancellationTokenCore => token;
        protected override Metadata ResponseTrailersCore => inner.ResponseTrailers;
        protected override AuthContext AuthContextCore => inner.AuthContext;
        protected override IDictionary<object, object> UserStateCore => inner.UserState;

        protected override Status StatusCore
        {
            get => inner.Status;
            set => inner.Status = value;
        }

        protected override WriteOptions? WriteOptionsCore
        {
            get => inner.WriteOptions;
            set => inner.WriteOptions = value;
        }

        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options)
            => inner.CreatePropagationToken(options);

        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders)
            => inner.WriteResponseHeadersAsync(responseHeaders);
    }
}
