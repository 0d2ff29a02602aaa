// Child processes of seqlab itself: `seqlab compare` trains each model in one (its own peak RSS; a
// crash stops only that model) and `seqlab bench` times each (model, T) case in one. One helper
// starts the child with posix_spawn, feeds it an environment, captures or drops its stdout and waits
// for it (retrying on EINTR), returning the exit status and the child's resource usage. A stop
// request to this process (request_stop(): SIGINT or SIGTERM) is passed on to the child as SIGUSR1.
#pragma once
#include <sys/resource.h>

#include <string>
#include <vector>

namespace seqlab::app {

struct ChildOutcome {
  int status = 0;           // as waitpid reports it (WIFEXITED, WEXITSTATUS, WIFSIGNALED, ...)
  std::string out;          // the child's stdout when captured
  struct rusage usage {};   // its resource usage (ru_maxrss: peak RSS in KiB)
  bool exited_ok() const;   // exited with status 0
  std::string describe() const;  // "exit code 3" or "signal 9"
};

/// Runs args[0] with args as argv. env: "NAME=value" strings, or nullptr for this process's
/// environment. capture_stdout: the child's stdout is read into out, else sent to /dev/null (its
/// stderr, the log, goes where ours goes). Throws seqlab::Error naming args[0] when it cannot start.
ChildOutcome run_child(const std::vector<std::string>& args, const std::vector<std::string>* env,
                       bool capture_stdout);

}  // namespace seqlab::app
