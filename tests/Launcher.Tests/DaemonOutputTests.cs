using System.Text;

namespace Hypervisor.Launcher.Tests;

public class DaemonOutputTests
{
    private static DaemonOutput Of(string text)
    {
        var output = new DaemonOutput();
        var bytes = Encoding.UTF8.GetBytes(text);
        // Split at an odd place: a pipe delivers lines in arbitrary pieces.
        output.Append(bytes.AsSpan(0, bytes.Length / 3));
        output.Append(bytes.AsSpan(bytes.Length / 3));
        output.Complete();
        return output;
    }

    [Fact]
    public void Reason_IsTheDaemonsOwnSentence_WithoutItsPrefix()
    {
        var output = Of("07:00:00.000 info: passthrough[0] starting\npassthrough: Cannot mount at /m: Permission denied.\n07:00:00.100 info: bye\n");
        Assert.Equal("Cannot mount at /m: Permission denied.", output.Reason());
    }

    [Fact]
    public void Reason_IsTheUnhandledExceptionLine_NotAStackFrame()
    {
        var output = Of("Unhandled exception. System.InvalidOperationException: broken\n   at X.Y()\n   at Z.W()\n");
        Assert.Equal("Unhandled exception. System.InvalidOperationException: broken", output.Reason());
    }

    [Fact]
    public void Reason_FallsBackToTheLastLine_AndIsNullForSilence()
    {
        Assert.Equal("last words", Of("first\nlast words").Reason());
        Assert.Null(Of("").Reason());
    }

    [Fact]
    public void KeepsOnlyTheLastLines_EachBounded()
    {
        var text = new StringBuilder();
        for (int i = 0; i < DaemonOutput.MaxLines + 50; i++) text.Append("line ").Append(i).Append('\n');
        text.Append(new string('x', DaemonOutput.MaxLineChars * 3)).Append('\n');
        var output = Of(text.ToString());
        Assert.Equal(DaemonOutput.MaxLines, output.Lines.Count);
        Assert.Equal("line 51", output.Lines.First());
        Assert.Equal(DaemonOutput.MaxLineChars, output.Lines.Last().Length);
    }
}
