package hyco.interop;

import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import org.json.JSONObject;

/** One JSON object per stdout line, as the Node peers print them (tests/interop/node/README.md). */
final class Events {
    private static final PrintStream OUT = new PrintStream(System.out, true, StandardCharsets.UTF_8);

    private Events() {}

    static synchronized void emit(JSONObject event) {
        OUT.println(event.toString());
    }

    static void emit(String name) {
        emit(new JSONObject().put("event", name));
    }

    /** An error event: the exception's class and message (never a token: the SDK puts none in them). */
    static void error(Throwable err) {
        Throwable cause = err;
        while (cause.getCause() != null && cause != cause.getCause()) {
            cause = cause.getCause();
        }
        emit(new JSONObject().put("event", "error").put("type", cause.getClass().getSimpleName())
                .put("message", String.valueOf(cause.getMessage())));
    }

    static JSONObject message(String type, byte[] data) {
        String text = type.equals("text")
                ? new String(data, StandardCharsets.UTF_8) : Base64.getEncoder().encodeToString(data);
        return new JSONObject().put("event", "message").put("type", type).put("data", text);
    }

    static void usage(String text) {
        System.err.println("usage: " + text);
        System.exit(2);
    }
}
